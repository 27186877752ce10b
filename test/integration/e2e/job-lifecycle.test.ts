// The walking skeleton end to end, with real parts: the API over HTTP, the scheduler, a real bwrap sandbox on the
// built rootfs, sandboxd inside it, the agent loop driven by a scripted model or by a real HTTP server speaking
// the OpenAI protocol, and the zipped workspace.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { toolNames } from '../../../src/agent/tools/definitions.ts';
import { collectEvents, downloadZip, get, post, startTestApp, trajectoriesDir, type StreamedEvent, type TestApp } from '../../helpers/app.ts';
import { scriptedReplies, startOpenAICompatibleServer, type AssistantReply, type OpenAICompatibleServer } from '../../helpers/openai-compatible-server.ts';

interface JobDetail {
  job_id: string;
  status: string;
  error?: string;
  summary: string | null;
  runtime_used: string | null;
  isolation: string | null;
  usage: { steps: number; input_tokens: number; output_tokens: number };
  download_url?: string;
  artifacts_url?: string;
}

let app: TestApp | undefined;
let llm: OpenAICompatibleServer | undefined;
afterEach(async () => {
  await app?.close();
  await llm?.close();
  app = undefined;
  llm = undefined;
});

const task = 'Write hello.py and notes.txt, run hello.py, then update the notes.';

async function scheduleAndFollow(body: Record<string, unknown>): Promise<{ jobId: string; events: StreamedEvent[]; job: JobDetail }> {
  const scheduled = await post<{ job_id: string }>(app!, '/schedule', body);
  expect(scheduled.status).toBe(202);
  const jobId = scheduled.body.job_id;
  const events = await collectEvents(app!, jobId);
  return { jobId, events, job: await get<JobDetail>(app!, `/jobs/${jobId}`) };
}

/** The two-files trajectory's end state: both files, the edit applied. */
async function expectTwoFilesWorkspace(jobId: string) {
  const zip = await downloadZip(app!, jobId);
  expect([...zip.keys()].sort()).toEqual(['hello.py', 'notes.txt']);
  expect(zip.get('hello.py')?.content).toBe('print("Hello from workcell")\n');
  expect(zip.get('notes.txt')?.content).toBe('status: verified (python3 hello.py printed the greeting)\n');
}

/** Every tool call is followed by its result before the next model turn; ids increase; the job's life is in order. */
function expectOrderedSteps(events: StreamedEvent[], finalStatus: string) {
  const ids = events.map((e) => e.id);
  expect(ids).toEqual([...ids].sort((a, b) => a - b));
  expect(new Set(ids).size).toBe(ids.length);
  const statuses = events.filter((e) => e.type === 'job-status').map((e) => e.data.status);
  expect(statuses).toEqual(['pending', 'running', finalStatus]);
  expect(events.at(-1)?.type).toBe('job-status');
  const open = new Set<string>();
  for (const event of events) {
    if (event.type === 'tool-call') open.add(String(event.data.call_id));
    if (event.type === 'tool-result') expect(open.delete(String(event.data.call_id))).toBe(true);
    if (event.type === 'model-turn') expect(open.size).toBe(0);
  }
  expect(open.size).toBe(0);
}

describe('a job driven by a script: model', () => {
  it('writes two files, runs one with python3, edits one and finishes: complete, zip, every step on SSE in order', async () => {
    app = await startTestApp();
    const { jobId, events, job } = await scheduleAndFollow({ task, model: 'script:two-files.json' });

    expect(job).toMatchObject({ status: 'complete', runtime_used: 'bwrap', summary: expect.stringContaining('hello.py') });
    expect(job.isolation).toMatch(/bwrap/);
    expect(job.usage.steps).toBe(4);
    expect(job.download_url).toBe(`${app.url}/jobs/${jobId}/artifacts.zip`);
    expectOrderedSteps(events, 'complete');
    expect(events.map((e) => e.type)).toEqual([
      'job-status', 'job-status', 'sandbox-ready', 'user-message',
      'model-turn', 'tool-call', 'tool-result', 'tool-call', 'tool-result',
      'model-turn', 'tool-call', 'tool-result',
      'model-turn', 'tool-call', 'tool-result',
      'model-turn', 'tool-call', 'tool-result',
      'job-status',
    ]);
    const shell = events.find((e) => e.type === 'tool-result' && e.data.name === 'shell');
    expect(shell?.data).toMatchObject({ is_error: false, output: expect.stringContaining('Hello from workcell') });
    expect(events.find((e) => e.type === 'user-message')?.data.text).toBe(task);
    await expectTwoFilesWorkspace(jobId);

    // The job directory has the layout of DESIGN.md §3.
    const root = join(app.dataDir, 'jobs', jobId);
    expect(readFileSync(join(root, 'input.txt'), 'utf8')).toBe(task);
    expect(readFileSync(join(root, 'logs', 'orchestrator.log'), 'utf8')).toMatch(/sandbox ready/);
    // A second follower resumes after any event id and gets exactly the rest.
    const middle = events[Math.floor(events.length / 2)]!.id;
    const rest = await collectEvents(app, jobId, { lastEventId: middle });
    expect(rest.map((e) => e.id)).toEqual(events.filter((e) => e.id > middle).map((e) => e.id));
  });

  it('refuses every file tool that reaches outside /workspace in the real sandbox, and the zip holds nothing from outside', async () => {
    app = await startTestApp();
    const { jobId, events, job } = await scheduleAndFollow({ task: 'probe', model: 'script:hostile-paths.json' });
    expect(job.status).toBe('complete');
    const results = events.filter((e) => e.type === 'tool-result');
    expect(results[0]?.data).toMatchObject({ name: 'shell', is_error: false, output: expect.stringContaining('made') });
    const hostile = results.slice(1, -2); // all but the shell, the last write and finish
    expect(hostile).toHaveLength(14);
    for (const result of hostile) {
      expect(result.data.is_error, JSON.stringify(result.data)).toBe(true);
      expect(String(result.data.output)).toMatch(/path_outside_workspace|outside|refused|workspace root/i);
    }
    expect(results.at(-2)?.data).toMatchObject({ name: 'write_file', is_error: false });
    const zip = await downloadZip(app, jobId);
    expect(zip.get('ok.txt')?.content).toBe('inside');
    // Links that point outside are left out of the zip, never followed.
    expect([...zip.keys()].sort()).toEqual(['ok.txt']);
  });

  it('ends with error at the step limit', async () => {
    app = await startTestApp();
    const { events, job } = await scheduleAndFollow({ task, model: 'script:two-files.json', limits: { max_steps: 2 } });
    expect(job.status).toBe('error');
    expect(job.error).toMatch(/step limit \(2\)/);
    expectOrderedSteps(events, 'error');
  });

  it('ends with error at the wall-time limit, mid-command, and still zips the workspace', async () => {
    app = await startTestApp();
    const started = Date.now();
    const { jobId, job } = await scheduleAndFollow({ task, model: 'script:long-sleep.json', limits: { wall_time_s: 3 } });
    expect(job.status).toBe('error');
    expect(job.error).toMatch(/wall time limit \(3 s\) exceeded/);
    expect(Date.now() - started).toBeLessThan(60_000);
    const zip = await downloadZip(app, jobId);
    expect(zip.get('before.txt')?.content).toBe('written before the long command\n');
  });

  it('cancels a running job mid-command: cancelled, sandbox gone, workspace zipped', async () => {
    app = await startTestApp();
    const { body } = await post<{ job_id: string }>(app, '/schedule', { task, model: 'script:long-sleep.json' });
    let sandboxId = '';
    const events = await collectEvents(app, body.job_id, {
      onEvent: (event) => {
        if (event.type === 'sandbox-ready') sandboxId = String(event.data.sandbox_id);
        if (event.type === 'tool-call' && event.data.name === 'shell') void post(app!, `/jobs/${body.job_id}/cancel`, {});
      },
    });
    expect(events.at(-1)?.data.status).toBe('cancelled');
    const job = await get<JobDetail>(app, `/jobs/${body.job_id}`);
    expect(job).toMatchObject({ status: 'cancelled', artifacts_url: expect.any(String) });
    expect(job.download_url).toBeUndefined();
    expect(sandboxId).not.toBe('');
    // No process of that sandbox survives (its run dir path is on bwrap's command line).
    const survivors = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((line) => line.includes(sandboxId));
    expect(survivors).toEqual([]);
    expect((await downloadZip(app, body.job_id)).get('before.txt')?.content).toBe('written before the long command\n');
    // Cancelling again is a conflict, not a crash.
    expect((await post(app, `/jobs/${body.job_id}/cancel`, {})).status).toBe(409);
  });

  it('refuses a script: model outside WORKCELL_SCRIPT_DIR when scheduling', async () => {
    app = await startTestApp();
    for (const model of ['script:/etc/passwd', 'script:../../../etc/shadow']) {
      const response = await post<{ detail: string }>(app, '/schedule', { task, model });
      expect(response.status).toBe(400);
      expect(response.body.detail).not.toMatch(/root:/);
    }
  });
});

describe('a job with no model configured', () => {
  it('ends at once with an error that says how to configure one', async () => {
    app = await startTestApp({ model: undefined });
    const { job, events } = await scheduleAndFollow({ task });
    expect(job.status).toBe('error');
    expect(job.error).toMatch(/WORKCELL_MODEL/);
    expect(events.some((e) => e.type === 'sandbox-ready')).toBe(false);
  });
});

describe.each([true, false])('a job driven by an OpenAI-compatible server (streaming: %s)', (stream) => {
  it('completes the same job through @ai-sdk/openai-compatible over HTTP', async () => {
    const trajectory = JSON.parse(readFileSync(join(trajectoriesDir, 'two-files.json'), 'utf8')) as { turns: Array<{ text?: string; tool_calls?: Array<{ name: string; args: Record<string, unknown> }> }> };
    const replies: AssistantReply[] = trajectory.turns.map((turn, i) => ({
      ...(turn.text ? { text: turn.text } : {}),
      tool_calls: (turn.tool_calls ?? []).map((call, j) => ({ id: `call_${i}_${j}`, name: call.name, arguments: call.args })),
    }));
    // The first request is refused once with a 429 to exercise the retry with backoff.
    llm = await startOpenAICompatibleServer(scriptedReplies([{ status: 429, headers: { 'retry-after-ms': '50' }, body: { error: { message: 'slow down' } } }, ...replies]));
    app = await startTestApp({ model: 'openai-compatible:test-model', openaiCompatibleBaseUrl: llm.baseUrl, modelStream: stream });
    const { jobId, events, job } = await scheduleAndFollow({ task });

    expect(job.status).toBe('complete');
    expectOrderedSteps(events, 'complete');
    expect(events.filter((e) => e.type === 'model-retry')).toHaveLength(1);
    await expectTwoFilesWorkspace(jobId);
    expect(llm.requests).toHaveLength(5);
    for (const request of llm.requests) {
      expect(request.path).toBe('/v1/chat/completions');
      expect(request.body.model).toBe('test-model');
      expect(Boolean(request.body.stream)).toBe(stream);
      expect(JSON.stringify(request.body.messages)).toContain(task);
      // Every tool of the product surface, each once.
      expect(request.body.tools?.map((t) => t.function.name).sort()).toEqual([...toolNames].sort());
      expect(toolNames).toEqual(expect.arrayContaining(['shell', 'read_file', 'write_file', 'edit_file', 'list_files', 'search_files', 'delete_file', 'recall', 'finish']));
    }
    // The tool results went back to the model: the last request carries the shell's output.
    expect(JSON.stringify(llm.requests.at(-1)?.body.messages)).toContain('Hello from workcell');
  });
});
