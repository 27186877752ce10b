// Pages that come from inside a sandbox never get the API's origin (issue 9, finding 2). A hostile agent (a script:
// trajectory) writes a page that tries to read and drive the API from a person's browser, and listens on the
// desktop's port before the desktop starts. On a keyless server (the easiest to attack: no credential at all):
// - the desktop is not served: sandboxd sees that another process holds port 6080 and refuses;
// - Debian's Chromium opens the agent's page through Jupyter: it runs on the job's own origin (or an opaque one), not
//   the API's; it cannot read the API, and its request to schedule a job is refused (no job is created).
import { chromium, type Browser } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { collectEvents, startTestApp, type StreamedEvent, type TestApp } from '../../helpers/app.ts';
import { openPage, request } from '../../helpers/job-origin.ts';

let app: TestApp | undefined;
let browser: Browser | undefined;
afterEach(async () => {
  await browser?.close();
  await app?.close();
  browser = undefined;
  app = undefined;
});

const chromiumFlags = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe('pages served from inside a sandbox', () => {
  it("never run with the API's origin, and a port the agent took first is not served as the desktop", async () => {
    app = await startTestApp();
    const scheduled = await request(`${app.url}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ task: 'attack', model: 'script:hostile-pages.json' }) });
    expect(scheduled.status).toBe(202);
    const jobId = scheduled.json<{ job_id: string }>().job_id;
    // The agent is in its last shell call once its fake desktop listens.
    let listening!: () => void;
    const inSleep = new Promise<void>((resolve) => (listening = resolve));
    const events = collectEvents(app, jobId, { onEvent: (event: StreamedEvent) => void (event.type === 'tool-call' && event.step === 3 && listening()) });
    await inSleep;
    const origin = `http://${jobId.replace('_', '-')}.localhost:${new URL(app.url).port}`;

    // The desktop: refused while the agent's server holds its port (the agent's page is not shown as the desktop).
    const { cookie } = await openPage(app, jobId, 'desktop');
    let desktop = await request(`${origin}/jobs/${jobId}/desktop/evil.html`, { headers: { cookie } });
    // The agent's server must be up when the check runs: the step began once it accepted a connection.
    expect(desktop.status).toBe(503);
    expect(desktop.text()).toMatch(/another program in the sandbox listens on port 6080/);
    desktop = await request(`${origin}/jobs/${jobId}/desktop/`, { headers: { cookie } });
    expect(desktop.status).toBe(302);

    // The agent's page through Jupyter, in a real browser.
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: chromiumFlags });
    const page = await browser.newPage();
    await page.goto(`${app.url}/jobs/${jobId}/jupyter/files/evil.html`);
    await page.waitForFunction(() => (globalThis as unknown as { document: { title: string } }).document.title === 'done', undefined, { timeout: 60_000 });
    expect(new URL(page.url()).origin).toBe(origin);
    const seen = JSON.parse(await page.locator('#out').innerText()) as { origin: string; cookie: string; read: string; write: string };
    expect([origin, 'null']).toContain(seen.origin);
    expect(seen.origin).not.toBe(new URL(app.url).origin);
    expect(seen.read).toBe('blocked');
    const jobs = (await request(`${app.url}/jobs`)).json<{ jobs: Array<{ task: string }> }>().jobs;
    expect(jobs.map((job) => job.task)).not.toContain('planted by a sandbox page');
    expect(jobs).toHaveLength(1);

    expect((await request(`${app.url}/jobs/${jobId}/cancel`, { method: 'POST' })).status).toBe(202);
    expect((await events).at(-1)?.data.status).toBe('cancelled');
  });
});
