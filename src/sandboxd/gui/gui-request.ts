// The `gui` tool's request and response, shared by sandboxd (which validates and runs it) and the worker (whose tool
// definition describes it to the model with these same bounds). One flat object with an `action` and the fields that
// action takes, not a union: providers want a tool's input schema to be a single object. checkGuiFields says, per
// action, which fields are required and which are not taken, in messages written for the model. What only sandboxd
// knows (the screen's size, whether a window exists) is checked there (gui-tool.ts).
import { z } from 'zod';

export const guiActions = ['screenshot', 'windows', 'launch', 'click', 'double_click', 'move', 'drag', 'scroll', 'type', 'key', 'script'] as const;
export type GuiAction = (typeof guiActions)[number];
export const mouseButtons = ['left', 'middle', 'right'] as const;
export const scrollDirections = ['up', 'down', 'left', 'right'] as const;

/** The desktop's screen, in pixels (Anthropic's recommended size for computer use: screenshots need no scaling). */
export const defaultScreen = { width: 1280, height: 800 } as const;

/** Longest text `type` takes (typed at about 80 characters a second). */
export const maxTypeChars = 5000;
/** Most keys in one `key` call. */
export const maxKeys = 50;
/** Lines of one `script`. */
export const maxScriptLines = 100;
export const maxScrollAmount = 50;
export const maxLaunchCommandChars = 10_000;
/** A whole script's time limit. */
export const scriptTimeoutMs = 60_000;
/** How long launch waits for the program's first window. */
export const launchWindowWaitMs = 10_000;

/** Far beyond any screen (sandboxd checks the real size); a bound keeps the JSON schema short. */
const maxCoordinate = 100_000;
const pixel = (edge: 'left' | 'top') =>
  z
    .number()
    .int(`coordinates are whole screen pixels, counted from 0 at the ${edge} edge`)
    .min(0, `coordinates are screen pixels counted from 0 at the ${edge} edge`)
    .max(maxCoordinate, `coordinates are screen pixels; no screen is ${maxCoordinate} pixels wide`);

/** Each field's type and bounds (the tool definition adds the descriptions the model reads). */
export const guiFieldSchemas = {
  action: z.enum(guiActions),
  x: pixel('left'),
  y: pixel('top'),
  to_x: pixel('left'),
  to_y: pixel('top'),
  button: z.enum(mouseButtons),
  direction: z.enum(scrollDirections),
  amount: z.number().int().min(1).max(maxScrollAmount),
  text: z.string().min(1).max(maxTypeChars),
  keys: z.string().min(1).max(2000),
  command: z.string().max(maxLaunchCommandChars),
  script: z.string().min(1).max(100_000),
  screenshot: z.boolean(),
};
type Field = Exclude<keyof typeof guiFieldSchemas, 'action'>;

/** What each action takes: required fields, then optional ones. */
export const guiActionFields: Record<GuiAction, { required: Field[]; optional: Field[] }> = {
  screenshot: { required: [], optional: [] },
  windows: { required: [], optional: [] },
  launch: { required: ['command'], optional: ['screenshot'] },
  click: { required: ['x', 'y'], optional: ['button', 'screenshot'] },
  double_click: { required: ['x', 'y'], optional: ['button', 'screenshot'] },
  move: { required: ['x', 'y'], optional: ['screenshot'] },
  drag: { required: ['x', 'y', 'to_x', 'to_y'], optional: ['button', 'screenshot'] },
  scroll: { required: ['x', 'y', 'direction'], optional: ['amount', 'screenshot'] },
  type: { required: ['text'], optional: ['screenshot'] },
  key: { required: ['keys'], optional: ['screenshot'] },
  script: { required: ['script'], optional: ['screenshot'] },
};

/** `click {x, y, button?, screenshot?}`: an action's signature, for error messages. */
export function guiActionSignature(action: GuiAction): string {
  const { required, optional } = guiActionFields[action];
  const fields = [...required, ...optional.map((field) => `${field}?`)];
  return fields.length === 0 ? action : `${action} {${fields.join(', ')}}`;
}

/**
 * The per-action check, as a zod refinement: a field the action needs is missing, or one it does not take is there.
 * Written so that one message tells the model how to fix the whole call.
 */
export function checkGuiFields(value: Partial<Record<keyof typeof guiFieldSchemas, unknown>>, context: z.RefinementCtx): void {
  const action = value.action as GuiAction | undefined;
  if (action === undefined || !Object.hasOwn(guiActionFields, action)) return; // the enum reports it
  const { required, optional } = guiActionFields[action];
  const signature = guiActionSignature(action);
  for (const field of required) {
    if (value[field] === undefined) context.addIssue({ code: 'custom', path: [field], message: `${action} needs ${field}: ${signature}` });
  }
  for (const field of Object.keys(value) as Array<keyof typeof value>) {
    if (field === 'action' || value[field] === undefined || !Object.hasOwn(guiFieldSchemas, field)) continue;
    if (!required.includes(field) && !optional.includes(field)) {
      context.addIssue({ code: 'custom', path: [field], message: `${action} does not take ${field}: ${signature}` });
    }
  }
  if (action === 'launch' && typeof value.command === 'string' && value.command.trim() === '') {
    context.addIssue({ code: 'custom', path: ['command'], message: 'launch needs a command to run, e.g. "xterm" or "python3 app.py"' });
  }
}

const optionalFields = Object.fromEntries(Object.entries(guiFieldSchemas).map(([name, schema]) => [name, name === 'action' ? schema : schema.optional()])) as {
  action: (typeof guiFieldSchemas)['action'];
} & { [F in Field]: z.ZodOptional<(typeof guiFieldSchemas)[F]> };

/** sandboxd's request (the tool definition's schema is the same with descriptions). */
export const guiRequest = z.strictObject(optionalFields).superRefine(checkGuiFields);
export type GuiRequest = z.output<typeof guiRequest>;

const rectangle = z.object({ x: z.number().int(), y: z.number().int(), width: z.number().int(), height: z.number().int() });

export const guiWindow = z.object({
  /** The X window id, e.g. "0x40000c" (xdotool takes it as a number: 0x40000c or 4194316). */
  id: z.string(),
  title: z.string(),
  /** WM_CLASS's class, e.g. "XTerm". */
  class: z.string().optional(),
  pid: z.number().int().optional(),
  /** The window's content (its own area, without the window manager's title bar and border), in absolute screen pixels. */
  ...rectangle.shape,
  /** The whole window as drawn, title bar and border included. */
  frame: rectangle,
  active: z.boolean(),
  minimized: z.boolean(),
});
export type GuiWindow = z.infer<typeof guiWindow>;

export const guiScreenshot = z.object({
  media_type: z.literal('image/png'),
  /** The PNG, base64. */
  data: z.string(),
  width: z.number().int(),
  height: z.number().int(),
});
export type GuiScreenshot = z.infer<typeof guiScreenshot>;

export const guiResponse = z.object({
  /** What happened, for the model (and, for models without images, what the screen shows: its size and windows). */
  output: z.string(),
  screenshot: guiScreenshot.optional(),
  windows: z.array(guiWindow).optional(),
  /** Screen size in pixels. */
  screen: z.object({ width: z.number().int(), height: z.number().int() }),
  duration_ms: z.number(),
});
export type GuiResponse = z.infer<typeof guiResponse>;
