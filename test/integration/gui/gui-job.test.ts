// The gui tool in whole jobs, through the API: a script: trajectory opens an xterm on the real desktop of a real
// sandbox, types a command into it and presses Return; the command's file is in the job's zip, and the screenshot
// is a PNG file in the job's directory that the events point to. Bad gui calls are error results the job survives.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { collectEvents, downloadZip, get, post, startTestApp, type StreamedEvent, type TestApp } from '../../helpers/app.ts';
import { decodePng } from '../../helpers/png.ts';

let app: TestApp | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

async function runJob(trajectory: string): Promise<{ jobId: string; events: StreamedEvent[]; job: { status: string; error?: string } }> {
  const scheduled = await post<{ job_id: string }>(app!, '/schedule', { task: 'use the desktop', model: `script:${trajectory}` });
  expect(scheduled.status).toBe(202);
  const jobId = scheduled.body.job_id;
  const events = await collectEvents(app!, jobId);
  return { jobId, events, job: await get(app!, `/jobs/${jobId}`) };
}

describe('the gui tool in a job', () => {
  it('launches xterm, types a command into it and presses Return: the file is in the zip, the screenshot in the job directory', async () => {
    app = await startTestApp();
    const { jobId, events, job } = await runJob('gui-xterm.json');
    expect(job.status, job.error).toBe('complete');
    const results = events.filter((event) => event.type === 'tool-result');
    const byCall = (step: number) => results.filter((event) => event.step === step);
    for (const result of results) expect(result.data.is_error, JSON.stringify(result.data)).toBe(false);

    const [launch] = byCall(1);
    expect(launch?.data.output).toMatch(/^Started "xterm" \(pid \d+\) in \/workspace; its output goes to \/tmp\/workcell-desktop\/launch-1-xterm\.log\.\nNew window:\n- "xterm" \(XTerm, pid \d+\)/);
    expect(byCall(2)[0]?.data.output).toBe('Typed 33 characters. The text went to the active window, "xterm".');
    expect(byCall(3)[0]?.data.output).toBe('Pressed Return. The keys went to the active window, "xterm".');
    expect(byCall(4)[0]?.data.output).toMatch(/exit code: 0\noutput:\nhi\n?$/);

    // windows: the xterm, with absolute geometry inside the screen.
    const [windows, screenshot] = byCall(5);
    const line = /^- "xterm" \(XTerm, pid \d+\) \[active\]: content at x=(\d+) y=(\d+), (\d+)x(\d+); with title bar and border x=(\d+) y=(\d+), (\d+)x(\d+); id 0x[0-9a-f]+$/m.exec(String(windows?.data.output));
    expect(line, String(windows?.data.output)).not.toBeNull();
    const [x, y, width, height, frameX, frameY] = line!.slice(1, 7).map(Number) as [number, number, number, number, number, number];
    expect(x + width).toBeLessThanOrEqual(1280);
    expect(y + height).toBeLessThanOrEqual(800);
    expect(y - frameY).toBeGreaterThanOrEqual(15); // below the title bar
    expect(x - frameX).toBeGreaterThanOrEqual(0);

    // Every gui result with a screenshot points to a PNG file in the job's directory; no event holds image bytes.
    const withImages = results.filter((event) => Array.isArray(event.data.images));
    expect(withImages.map((event) => event.step)).toEqual([1, 2, 3, 5]);
    for (const event of events) expect(JSON.stringify(event.data).length, event.type).toBeLessThan(20_000);
    const image = (screenshot?.data.images as Array<{ path: string; media_type: string; width: number; height: number; bytes: number }>)[0]!;
    expect(image).toMatchObject({ path: 'logs/screenshots/step-5-call-2.png', media_type: 'image/png', width: 1280, height: 800 });
    const file = join(app.dataDir, 'jobs', jobId, image.path);
    expect(existsSync(file)).toBe(true);
    const png = decodePng(readFileSync(file));
    expect([png.width, png.height]).toEqual([1280, 800]);
    expect(readFileSync(file).length).toBe(image.bytes);
    // It shows the xterm: white content where the window list says, the black desktop elsewhere.
    expect(png.pixel(x + width - 4, y + height - 4)).toEqual([255, 255, 255]);
    expect(png.pixel(Math.max(0, frameX - 2), Math.max(0, frameY - 2))).toEqual([0, 0, 0]);
    expect(png.histogram().size).toBeGreaterThan(3);

    const zip = await downloadZip(app, jobId);
    expect(zip.get('from-gui.txt')?.content).toBe('hi\n');
    expect([...zip.keys()]).toEqual(['from-gui.txt']);
  });

  it('answers bad gui calls with errors the model can act on, and carries on', async () => {
    app = await startTestApp();
    const { jobId, events, job } = await runJob('gui-bad-input.json');
    expect(job.status, job.error).toBe('complete');
    const results = events.filter((event) => event.type === 'tool-result' && event.step === 1).map((event) => ({ error: event.data.is_error, output: String(event.data.output) }));
    expect(results.map((result) => result.error)).toEqual([true, true, true, true, true, true, true, true]);
    const outputs = results.map((result) => result.output);
    expect(outputs[0]).toMatch(/^Invalid arguments for gui:\n- action: Invalid option: expected one of "screenshot"\|"windows"\|"launch"/);
    expect(outputs[1]).toMatch(/- y: click needs y: click \{x, y, button\?, screenshot\?\}/);
    expect(outputs[2]).toMatch(/- keys: type does not take keys: type \{text, screenshot\?\}/);
    expect(outputs[3]).toBe('gui failed: invalid_request: x 5000 is off the screen: the screen is 1280x800 pixels, so x goes from 0 to 1279 and y from 0 to 799');
    expect(outputs[4]).toMatch(/^gui failed: invalid_request: script: line 2: the xdotool command "exec" is not allowed in scripts/);
    expect(outputs[5]).toMatch(/^gui failed: invalid_request: script: line 1: ";" outside quotes: a script is not a shell/);
    expect(outputs[6]).toMatch(/- command: launch needs a command to run/);
    expect(outputs[7]).toMatch(/^The arguments of this gui call are not valid JSON/);
    const after = events.find((event) => event.type === 'tool-result' && event.step === 2);
    expect(after?.data).toMatchObject({ name: 'gui', is_error: false, output: expect.stringMatching(/^The screen is 1280x800 pixels/) });
    expect([...(await downloadZip(app, jobId)).keys()]).toEqual([]);
  });
});
