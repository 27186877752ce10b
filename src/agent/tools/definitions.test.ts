import { asSchema } from 'ai';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { modelTools, toolDefinitions, toolNames, toolSignature } from './definitions.ts';

describe('tool definitions', () => {
  it('are exactly the product tools, with these parameters', () => {
    const shapes = Object.fromEntries(
      toolNames.map((name) => {
        const schema = z.toJSONSchema(toolDefinitions[name].inputSchema) as { properties: Record<string, unknown>; required?: string[] };
        return [name, { properties: Object.keys(schema.properties).sort(), required: (schema.required ?? []).sort() }];
      }),
    );
    expect(shapes).toEqual({
      shell: { properties: ['command', 'session', 'timeout_ms'], required: ['command'] },
      run_code: { properties: ['code', 'language', 'timeout_ms'], required: ['code', 'language'] },
      read_file: { properties: ['path'], required: ['path'] },
      write_file: { properties: ['content', 'path'], required: ['content', 'path'] },
      edit_file: { properties: ['new_string', 'old_string', 'path'], required: ['new_string', 'old_string', 'path'] },
      list_files: { properties: ['depth', 'include_ignored', 'path'], required: [] },
      search_files: { properties: ['glob', 'path', 'pattern'], required: ['pattern'] },
      delete_file: { properties: ['path'], required: ['path'] },
      gui: { properties: ['action', 'amount', 'button', 'command', 'direction', 'keys', 'screenshot', 'script', 'text', 'to_x', 'to_y', 'x', 'y'], required: ['action'] },
      recall: { properties: ['limit', 'query'], required: ['query'] },
      finish: { properties: ['summary'], required: ['summary'] },
    });
  });

  it('describe every tool and every field', () => {
    for (const name of toolNames) {
      const { summary, description, inputSchema } = toolDefinitions[name];
      // The summary is the tool's line in the system prompt: one line, and it names no other tool (which a job may
      // not be offered; shell and finish are plain words).
      expect(summary, name).toMatch(/^[a-z][^\n]{10,250}$/);
      for (const other of toolNames.filter((other) => other !== name && other !== 'shell' && other !== 'finish')) expect(summary, name).not.toMatch(new RegExp(`\\b${other}\\b`));
      expect(description.length, name).toBeGreaterThan(150);
      const schema = z.toJSONSchema(inputSchema) as { properties: Record<string, { description?: string }>; additionalProperties?: boolean };
      expect(schema.additionalProperties, name).toBe(false);
      for (const [field, property] of Object.entries(schema.properties)) expect(property.description, `${name}.${field}`).toMatch(/\w{3,}/);
    }
    // The limits the model needs to know are stated.
    expect(toolDefinitions.shell.description).toMatch(/timeout_ms/);
    expect(toolDefinitions.shell.description).toMatch(/30000 characters/);
    expect(toolDefinitions.edit_file.description).toMatch(/no_match/);
    expect(toolDefinitions.edit_file.description).toMatch(/multiple_matches/);
    expect(toolDefinitions.run_code.description).toMatch(/timeout_ms/);
    expect(toolDefinitions.run_code.description).toMatch(/python.*typescript.*javascript/is);
  });

  it('convert to the JSON schema the SDK sends to providers, without execute', async () => {
    const tools = modelTools();
    expect(Object.keys(tools)).toEqual(toolNames);
    for (const name of toolNames) {
      const tool = tools[name]!;
      expect('execute' in tool && tool.execute !== undefined).toBe(false);
      const jsonSchema = await asSchema(tool.inputSchema).jsonSchema;
      expect(jsonSchema).toMatchObject({ type: 'object' });
      expect(JSON.parse(JSON.stringify(jsonSchema))).toEqual(jsonSchema);
    }
  });

  it('render a one-line signature for error messages', () => {
    expect(toolSignature('shell')).toBe('shell {command: string, timeout_ms?: integer, session?: string}');
    expect(toolSignature('edit_file')).toBe('edit_file {path: string, old_string: string, new_string: string}');
  });
});
