// The forms' own checks, mirroring the API's rules so most mistakes are caught
// before a round trip; the API's answer (with its field) is still shown if it refuses.
// The settings' checks come from the API's schema (`settings.ts`).

import { collectSettings, type SettingField } from './settings';

export interface DeployForm {
  name: string;
  command: string;
  /** Each setting's text, by the API's name for it; empty: its default. */
  settings: Record<string, string>;
}

export type FieldErrors = Record<string, string>;

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** The deploy form: name and command are required, the settings optional. */
export function validateDeploy(
  form: DeployForm,
  fields: SettingField[],
): { errors: FieldErrors; body: Record<string, unknown> } {
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
  collectSettings(fields, form.settings, errors, body);
  return { errors, body };
}

/** The settings of an existing service: only what differs from `current` is sent. */
export function validateSettings(
  fields: SettingField[],
  values: Record<string, string>,
  current: Record<string, string>,
): { errors: FieldErrors; body: Record<string, unknown> } {
  const errors: FieldErrors = {};
  const body: Record<string, unknown> = {};
  collectSettings(fields, values, errors, body, current);
  return { errors, body };
}
