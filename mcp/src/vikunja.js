// A small client for the part of Vikunja's API v1 the tools use. Vikunja's
// update (POST /tasks/{id}) replaces the task's editable fields, so updates
// read the task first and send it back whole.

export class VikunjaError extends Error {
  constructor(status, message) {
    super(`Vikunja answered ${status}: ${message}`);
    this.status = status;
  }
}

export class NoTokenError extends Error {
  constructor(path) {
    super(`no Vikunja API token yet (waiting for ${path})`);
  }
}

// Vikunja's largest page (service.maxitemsperpage default).
const MAX_PER_PAGE = 50;

export class VikunjaClient {
  constructor({ baseUrl, token }) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.token = token;
  }

  async request(method, path, body) {
    const token = await this.token.get();
    if (!token) throw new NoTokenError(this.token.path);
    const res = await fetch(`${this.baseUrl}/api/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data;
    try {
      data = text === '' ? null : JSON.parse(text);
    } catch {
      data = text;
    }
    if (!res.ok) {
      throw new VikunjaError(res.status, (data && data.message) || text || res.statusText);
    }
    return { data, totalPages: Number(res.headers.get('x-pagination-total-pages') || 1) };
  }

  async listProjects() {
    const out = [];
    for (let page = 1; ; page++) {
      const { data, totalPages } = await this.request('GET', `/projects?page=${page}&per_page=${MAX_PER_PAGE}`);
      out.push(...data);
      if (page >= totalPages || data.length === 0) return out;
    }
  }

  // searchTasks uses GET /tasks with Vikunja's filter syntax.
  async searchTasks({ query, projectId, done, page = 1, perPage = MAX_PER_PAGE }) {
    const params = new URLSearchParams({ page: String(page), per_page: String(Math.min(perPage, MAX_PER_PAGE)) });
    if (query) params.set('s', query);
    const filters = [];
    if (done !== undefined) filters.push(`done = ${done}`);
    if (projectId !== undefined) filters.push(`project = ${projectId}`);
    if (filters.length > 0) params.set('filter', filters.join(' && '));
    const { data, totalPages } = await this.request('GET', `/tasks?${params}`);
    return { tasks: data, page, totalPages };
  }

  async createTask(projectId, fields) {
    const { data } = await this.request('PUT', `/projects/${projectId}/tasks`, fields);
    return data;
  }

  async getTask(id) {
    const { data } = await this.request('GET', `/tasks/${id}`);
    return data;
  }

  async updateTask(id, changes) {
    const current = await this.getTask(id);
    const { data } = await this.request('POST', `/tasks/${id}`, { ...current, ...changes });
    return data;
  }
}
