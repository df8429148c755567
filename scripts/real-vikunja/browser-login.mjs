// Logs in to a deployed Vikunja through nginx in Debian's Chromium, the way a
// user does, and adds a task in its UI. Used by deploy.sh:
//   node browser-login.mjs DOMAIN PASSWORD SCREENSHOT.png   (playwright-core installed)
import { chromium } from 'playwright-core';
const [domain, password, shot] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', `--host-resolver-rules=MAP ${domain} 127.0.0.1`] });
const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
const t0 = Date.now();
await page.goto(`https://${domain}/login`);
await page.getByLabel(/username/i).waitFor();
const loadMs = Date.now() - t0;
await page.getByLabel(/username/i).fill('admin');
await page.locator('input[type=password]').fill(password);
await page.getByRole('button', { name: /login/i }).click();
await page.waitForURL(u => !u.pathname.startsWith('/login'), { timeout: 20000 });
await page.goto(`https://${domain}/projects/1`);
const input = page.locator('input.add-task-textarea, textarea.add-task-textarea, textarea').first();
await input.waitFor({ timeout: 20000 });
await input.fill('task typed in the browser');
await input.press('Enter');
await page.getByText('task typed in the browser').first().waitFor({ timeout: 20000 });
await page.screenshot({ path: shot });
console.log(JSON.stringify({ domain, loginPageMs: loadMs, created: true }));
await browser.close();
