import { stat, readFile } from 'node:fs/promises';

// SecretFile reads a one-line secret from a file and reads it again only when
// the file changes (bootstrap writes the Vikunja token after we start, and an
// operator may rotate it). A missing file yields null.
export class SecretFile {
  constructor(path) {
    this.path = path;
    this.stamp = null;
    this.value = null;
  }

  async get() {
    let st;
    try {
      st = await stat(this.path);
    } catch (err) {
      if (err.code === 'ENOENT') {
        this.stamp = null;
        this.value = null;
        return null;
      }
      throw new Error(`stat ${this.path}: ${err.message}`);
    }
    const stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (stamp !== this.stamp) {
      const text = (await readFile(this.path, 'utf8')).trim();
      this.value = text === '' ? null : text;
      this.stamp = stamp;
    }
    return this.value;
  }
}
