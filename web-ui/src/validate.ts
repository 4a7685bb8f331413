// The forms' own checks, mirroring the API's rules so most mistakes are caught
// before a round trip; the API's answer (with its field) is still shown if it refuses.

export interface DeployForm {
  name: string;
  command: string;
  min_scale: string;
  max_scale: string;
  target_concurrency: string;
  scale_to_zero_grace: string;
  stable_window: string;
}

export interface SettingsForm {
  min_scale: string;
  max_scale: string;
  target_concurrency: string;
  scale_to_zero_grace: string;
  stable_window: string;
}

export type FieldErrors = Record<string, string>;

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const DURATION = /^(0|(\d+(ms|s|m|h))+)$/;

export function durationMs(text: string): number | null {
  if (!DURATION.test(text)) return null;
  if (text === '0') return 0;
  const factor: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  for (const [, value, unit] of text.matchAll(/(\d+)(ms|s|m|h)/g)) total += Number(value) * factor[unit];
  return total;
}

/** Checks the optional scaling fields shared by both forms; empty fields are left out. */
function scaling(form: SettingsForm, errors: FieldErrors, body: Record<string, unknown>): void {
  for (const field of ['min_scale', 'max_scale', 'target_concurrency'] as const) {
    const text = form[field].trim();
    if (text === '') continue;
    if (!/^\d+$/.test(text)) errors[field] = 'Enter a whole number, 0 or more.';
    else body[field] = Number(text);
  }
  if (body.max_scale === 0) errors.max_scale = 'Max scale must be at least 1.';
  if (body.target_concurrency === 0) errors.target_concurrency = 'Target concurrency must be at least 1.';
  if (typeof body.min_scale === 'number' && typeof body.max_scale === 'number' && body.min_scale > body.max_scale) {
    errors.min_scale = 'Min scale must not exceed max scale.';
  }
  const grace = form.scale_to_zero_grace.trim();
  if (grace !== '') {
    if (durationMs(grace) === null) errors.scale_to_zero_grace = 'Enter a duration such as 30s or 5m.';
    else body.scale_to_zero_grace = grace;
  }
  const window = form.stable_window.trim();
  if (window !== '') {
    const ms = durationMs(window);
    if (ms === null) errors.stable_window = 'Enter a duration such as 60s or 2m.';
    else if (ms < 1000 || ms > 3_600_000) errors.stable_window = 'The stable window must be between 1s and 1h.';
    else body.stable_window = window;
  }
}

/** The deploy form: name and command are required, the rest optional. */
export function validateDeploy(form: DeployForm): { errors: FieldErrors; body: Record<string, unknown> } {
  const errors: FieldErrors = {};
  const body: Record<string, unknown> = {};
  const name = form.name.trim();
  if (name === '') errors.name = 'A service needs a name.';
  else if (!NAME.test(name))
    errors.name = 'Use 1 to 63 lowercase letters, digits or "-", starting and ending with a letter or digit.';
  body.name = name;
  const command = form.command.trim();
  if (command === '') errors.command = 'Give the command that starts one instance of the function.';
  body.command = command;
  scaling(form, errors, body);
  return { errors, body };
}

/** The scaling settings of an existing service. */
export function validateSettings(form: SettingsForm): { errors: FieldErrors; body: Record<string, unknown> } {
  const errors: FieldErrors = {};
  const body: Record<string, unknown> = {};
  scaling(form, errors, body);
  return { errors, body };
}
