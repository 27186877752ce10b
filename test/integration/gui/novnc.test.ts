// People's view of a job's desktop, end to end: a whole workcell runs a job (a script: trajectory that opens an xterm
// with the gui tool and then waits in the shell), and the desktop is reached only through the orchestrator, on the
// job's own origin (http://job-<id>.localhost:<port>): the API's /jobs/<id>/desktop/ → the job's host → noVNC's page
// (websockify serving /usr/share/novnc in the sandbox) → its websocket at /jobs/<id>/desktop/websockify → sandboxd →
// websockify → x11vnc. A raw websocket client completes the RFB handshake; Debian's Chromium (playwright-core) opens
// the page, connects and shows the xterm; with API keys, a one-time link does the same. The job is cancelled at the end.
import { chromium, type Browser } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { post, startTestApp, type TestApp } from '../../helpers/app.ts';
import { requireHostTool } from '../../helpers/host-tools.ts';
import { decodePng } from '../../helpers/png.ts';
import { openPage, request } from '../../helpers/job-origin.ts';
import { openWebSocket } from '../../helpers/websocket.ts';

let app: TestApp | undefined;
let browser: Browser | undefined;
afterEach(async () => {
  await browser?.close();
  await app?.close();
  browser = undefined;
  app = undefined;
});

/** DESIGN.md section 9: what makes Debian's Chromium run here (playwright adds --headless itself). */
const chromiumFlags = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function schedule(headers: Record<string, string> = {}): Promise<string> {
  const response = await fetch(`${app!.url}/schedule`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ task: 'show the desktop', model: 'script:gui-desktop-watch.json' }) });
  expect(response.status).toBe(202);
  return ((await response.json()) as { job_id: string }).job_id;
}

/** Waits until the job is in its waiting shell command (step 2): its xterm is on the desktop by then. */
async function waitForShellStep(jobId: string, headers: Record<string, string> = {}): Promise<void> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const job = (await (await fetch(`${app!.url}/jobs/${jobId}`, { headers })).json()) as { status: string; usage: { steps: number }; error?: string };
    if (job.status !== 'pending' && job.status !== 'running') throw new Error(`the job ended: ${JSON.stringify(job)}`);
    if (job.usage.steps >= 2) return;
    if (Date.now() > deadline) throw new Error('the job did not reach its shell step');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function cancel(jobId: string, headers: Record<string, string> = {}): Promise<void> {
  const response = await fetch(`${app!.url}/jobs/${jobId}/cancel`, { method: 'POST', headers });
  expect(response.status).toBeLessThan(300);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const job = (await (await fetch(`${app!.url}/jobs/${jobId}`, { headers })).json()) as { status: string };
    if (job.status === 'cancelled') return;
    if (Date.now() > deadline) throw new Error(`the job is still ${job.status}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Opens noVNC in Chromium at `url` and waits until its canvas shows the desktop with the (white) xterm on it. */
async function watchDesktop(url: string): Promise<{ canvas: { width: number; height: number; white: number; colours: number }; png: Buffer; url: string }> {
  browser = await chromium.launch({ executablePath: requireHostTool('chromium'), headless: true, args: chromiumFlags });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(url);
  // Evaluated in the page (this project's TypeScript has no DOM types): the canvas's pixels once the xterm shows.
  const handle = await page.waitForFunction(
    `(() => {
      const canvas = document.querySelector('canvas');
      if (canvas === null || canvas.width < 100) return null;
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      let white = 0;
      const colours = new Set();
      for (let i = 0; i < data.length; i += 4 * 5) {
        colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        if (data[i] === 255 && data[i + 1] === 255 && data[i + 2] === 255) white++;
      }
      // The xterm (100x30 characters, white) covers a good part of the screen; the title bar adds colours.
      return white > 10000 && colours.size > 3 ? { width: canvas.width, height: canvas.height, white, colours: colours.size } : null;
    })()`,
    undefined,
    { timeout: 60_000, polling: 250 },
  );
  const canvas = (await handle.jsonValue()) as { width: number; height: number; white: number; colours: number };
  const png = await page.locator('canvas').first().screenshot();
  return { canvas, png, url: page.url() };
}

describe("a job's desktop through the orchestrator", () => {
  it('serves noVNC, completes the RFB handshake over its websocket, and shows the xterm in Chromium', async () => {
    app = await startTestApp();
    const jobId = await schedule();
    try {
      await waitForShellStep(jobId);
      // The API sends the browser to the job's own origin, which sends it on to noVNC's page.
      const entry = await request(`${app.url}/jobs/${jobId}/desktop/`);
      expect(entry.status).toBe(303);
      const link = new URL(String(entry.headers.location));
      const origin = link.origin;
      expect(origin).toBe(`http://${jobId.replace('_', '-')}.localhost:${new URL(app.url).port}`);
      expect((await request(link.href)).headers.location).toBe(`/jobs/${jobId}/desktop/`);
      const page0 = await request(`${origin}/jobs/${jobId}/desktop/`);
      expect(page0.status).toBe(302);
      const location = String(page0.headers.location);
      expect(location).toBe(`/jobs/${jobId}/desktop/vnc.html?path=${encodeURIComponent(`jobs/${jobId}/desktop/websockify`)}&autoconnect=1&resize=remote&reconnect=1`);
      // The first request starts the viewer (x11vnc and websockify) in the sandbox.
      const viewerStarted = performance.now();
      const page = await request(`${origin}${location}`);
      const viewerMs = Math.round(performance.now() - viewerStarted);
      expect(page.status).toBe(200);
      expect(page.headers['content-type']).toMatch(/text\/html/);
      expect(page.headers['content-security-policy']).toMatch(/frame-ancestors/);
      expect(page.text()).toMatch(/<title>noVNC<\/title>/);
      const script = await request(`${origin}/jobs/${jobId}/desktop/core/rfb.js`);
      expect(script.status).toBe(200);
      expect(script.text()).toMatch(/export default class RFB/);
      // Pages are never served on the API's own origin.
      expect((await request(`${app.url}${location}`)).status).toBe(303);

      // RFB 3.8 over the websocket: version, security (None), ClientInit, and the ServerInit of the 1280x800 screen.
      const started = performance.now();
      const ws = await openWebSocket(`${origin}/jobs/${jobId}/desktop/websockify`);
      try {
        expect(ws.head).toMatch(/^sec-websocket-protocol: binary$/im);
        const version = (await ws.read(12)).toString('latin1');
        expect(version).toMatch(/^RFB 003\.00[38]\n$/);
        ws.send(Buffer.from('RFB 003.008\n', 'latin1'));
        const count = (await ws.read(1))[0]!;
        const types = [...(await ws.read(count))];
        expect(types).toContain(1); // None: -nopw; only the orchestrator's key guards the way in
        ws.send(Buffer.from([1]));
        expect((await ws.read(4)).readUInt32BE(0)).toBe(0); // SecurityResult OK
        ws.send(Buffer.from([1])); // ClientInit: shared
        const init = await ws.read(24);
        expect([init.readUInt16BE(0), init.readUInt16BE(2)]).toEqual([1280, 800]);
        const name = (await ws.read(init.readUInt32BE(20))).toString('utf8');
        expect(name.length).toBeGreaterThan(0);
        console.info(`noVNC page (viewer start) in ${viewerMs} ms; RFB handshake through the orchestrator in ${Math.round(performance.now() - started)} ms; desktop name ${JSON.stringify(name)}`);
      } finally {
        ws.close();
      }

      const { canvas, png, url } = await watchDesktop(`${app.url}/jobs/${jobId}/desktop/`);
      expect([canvas.width, canvas.height]).toEqual([1280, 800]);
      expect(new URL(url).origin).toBe(origin);
      const shot = decodePng(png);
      expect(shot.width).toBeGreaterThan(600);
      expect(shot.histogram().size).toBeGreaterThan(3);
    } finally {
      await cancel(jobId);
    }
  });

  it("with API keys: needs the owner's key or session, and a one-time link opens the desktop in the browser", async () => {
    app = await startTestApp();
    const alice = (await app.store.keys.create('alice')).token;
    const bob = (await app.store.keys.create('bob')).token;
    const auth = { authorization: `Bearer ${alice}` };
    const jobId = await schedule(auth);
    try {
      await waitForShellStep(jobId, auth);
      const origin = `http://${jobId.replace('_', '-')}.localhost:${new URL(app.url).port}`;
      expect((await request(`${origin}/jobs/${jobId}/desktop/vnc.html`)).status).toBe(401);
      expect((await request(`${origin}/jobs/${jobId}/desktop/vnc.html`, { headers: { authorization: `Bearer ${bob}` } })).status).toBe(404);
      expect((await request(`${app.url}/jobs/${jobId}/desktop/`)).status).toBe(401); // a browser without a link gets nowhere
      await expect(openWebSocket(`${origin}/jobs/${jobId}/desktop/websockify`)).rejects.toThrow(/^no websocket: HTTP\/1.1 401/);
      await expect(openWebSocket(`${origin}/jobs/${jobId}/desktop/websockify`, { authorization: `Bearer ${bob}` })).rejects.toThrow(/^no websocket: HTTP\/1.1 404/);
      const ws = await openWebSocket(`${origin}/jobs/${jobId}/desktop/websockify`, auth);
      expect((await ws.read(12)).toString('latin1')).toMatch(/^RFB 003\.00[38]\n$/);
      ws.close();
      // The session a link leaves in the browser opens the websocket too.
      const { cookie } = await openPage(app, jobId, 'desktop', alice);
      const viaCookie = await openWebSocket(`${origin}/jobs/${jobId}/desktop/websockify`, { cookie });
      expect((await viaCookie.read(12)).toString('latin1')).toMatch(/^RFB 003\.00[38]\n$/);
      viaCookie.close();

      const made = await request(`${app.url}/jobs/${jobId}/links`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"service":"desktop"}' });
      const { canvas, url } = await watchDesktop(made.json<{ url: string }>().url);
      expect([canvas.width, canvas.height]).toEqual([1280, 800]);
      // The link left the address bar for an HttpOnly cookie on the job's host.
      expect(url).not.toContain('workcell_link');
      expect(url).toContain(`${origin}/jobs/${jobId}/desktop/vnc.html?path=`);
    } finally {
      await cancel(jobId, auth);
    }
  });

  it('refuses the desktop of a job that is not running', async () => {
    app = await startTestApp();
    const { body } = await post<{ job_id: string }>(app, '/schedule', { task: 'nothing', model: 'script:no-tool-calls.json' });
    const deadline = Date.now() + 60_000;
    while (!['complete', 'error'].includes(((await (await fetch(`${app.url}/jobs/${body.job_id}`)).json()) as { status: string }).status)) {
      if (Date.now() > deadline) throw new Error('the job did not end');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const origin = `http://${body.job_id.replace('_', '-')}.localhost:${new URL(app.url).port}`;
    expect((await request(`${origin}/jobs/${body.job_id}/desktop/vnc.html`)).status).toBe(409);
    await expect(openWebSocket(`${origin}/jobs/${body.job_id}/desktop/websockify`)).rejects.toThrow(/^no websocket: HTTP\/1.1 409/);
  });
});
