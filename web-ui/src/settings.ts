// The service settings the forms offer, read from the API's own OpenAPI document
// (`/api/v1/openapi.json`, its `ServiceSettings` schema): every setting the API takes
// becomes a field, with its default as the placeholder, its description as the hint
// and its type, bounds, choices or pattern checked before the request. Nothing here
// names a setting, so a setting added to the API reaches the forms as it is, and
// a setting of a shape the forms cannot show is an error, never a silent gap.

import type { FieldErrors } from './validate';

export type SettingKind = 'integer' | 'choice' | 'text';

export interface SettingField {
  /** As the API spells it, e.g. `min_scale`. */
  name: string;
  /** e.g. "Min scale". */
  label: string;
  kind: SettingKind;
  /** The description, less the sentence naming the default when the placeholder shows it. */
  hint: string;
  /** The default as text, or "default" when the platform decides it. */
  placeholder: string;
  minimum?: number;
  maximum?: number;
  choices?: string[];
  pattern?: RegExp;
  /** A value of the right shape, for the error message. */
  example?: string;
}

type Schema = { [key: string]: unknown };

export interface OpenApiDocument {
  components?: { schemas?: Record<string, Schema> };
}

const SCHEMA = 'ServiceSettings';

/** The document's `#/components/schemas/...` reference resolved, once. */
function resolve(schema: Schema, schemas: Record<string, Schema>): Schema {
  const ref = schema.$ref;
  if (typeof ref !== 'string') return schema;
  const target = schemas[ref.replace('#/components/schemas/', '')];
  if (!target) throw new Error(`the API document has no schema ${ref}`);
  return target;
}

/** An optional setting's schema without its `null`: `{oneOf: [null, X]}` or `type: [T, "null"]`. */
function present(schema: Schema, schemas: Record<string, Schema>): Schema {
  const alternatives = (schema.oneOf ?? schema.anyOf) as Schema[] | undefined;
  if (Array.isArray(alternatives)) {
    const real = alternatives.filter((alternative) => alternative.type !== 'null');
    if (real.length !== 1) throw new Error('a setting offers more than one kind of value');
    return { ...resolve(real[0], schemas), ...withoutAlternatives(schema) };
  }
  const resolved = resolve(schema, schemas);
  const type = resolved.type;
  if (Array.isArray(type)) return { ...resolved, type: type.find((t) => t !== 'null') };
  return resolved;
}

function withoutAlternatives(schema: Schema): Schema {
  const { oneOf: _oneOf, anyOf: _anyOf, ...rest } = schema;
  return rest;
}

function label(name: string): string {
  const words = name.replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** The description as a hint: one line, without "Default N." when the placeholder says N. */
function hintOf(description: string, hasDefault: boolean): string {
  const sentences = description.split(/(?<=\.)\s+(?=[A-Z])/).map((sentence) => sentence.replace(/\s+/g, ' ').trim());
  return sentences.filter((sentence) => !(hasDefault && /^Default\b/.test(sentence))).join(' ');
}

/** A setting's description: its own, or (for an optional reference) its reference's. */
function describe(property: Schema): string {
  if (typeof property.description === 'string') return property.description;
  const alternatives = ((property.oneOf ?? property.anyOf) as Schema[] | undefined) ?? [];
  const described = alternatives.find((alternative) => typeof alternative.description === 'string');
  return described ? String(described.description) : '';
}

function field(name: string, property: Schema, schemas: Record<string, Schema>): SettingField {
  const schema = present(property, schemas);
  const description = describe(property);
  const hasDefault = property.default !== undefined && property.default !== null;
  const base = {
    name,
    label: label(name),
    hint: hintOf(description, hasDefault),
    placeholder: hasDefault ? String(property.default) : 'default',
  };
  if (Array.isArray(schema.enum)) {
    return { ...base, kind: 'choice', choices: schema.enum.filter((choice) => choice !== null).map(String) };
  }
  if (schema.type === 'integer') {
    return {
      ...base,
      kind: 'integer',
      minimum: typeof schema.minimum === 'number' ? schema.minimum : undefined,
      maximum: typeof schema.maximum === 'number' ? schema.maximum : undefined,
    };
  }
  if (schema.type === 'string') {
    const examples = Array.isArray(schema.examples) ? schema.examples : [];
    return {
      ...base,
      kind: 'text',
      pattern: typeof schema.pattern === 'string' ? new RegExp(schema.pattern) : undefined,
      example: examples.length > 0 ? String(examples[0]) : undefined,
    };
  }
  throw new Error(`the setting ${name} has a kind of value the dashboard cannot show (${JSON.stringify(schema.type)})`);
}

/** Every setting of the API's document, in its order. */
export function settingFields(document: OpenApiDocument): SettingField[] {
  const schemas = document.components?.schemas ?? {};
  const settings = schemas[SCHEMA];
  const properties = settings?.properties as Record<string, Schema> | undefined;
  if (!properties) throw new Error(`the API document has no ${SCHEMA} schema`);
  return Object.entries(properties).map(([name, property]) => field(name, property, schemas));
}

/** Checks one field's text; `undefined` when it is fine (or empty: unset). */
export function checkSetting(field: SettingField, text: string): string | undefined {
  const value = text.trim();
  if (value === '') return undefined;
  switch (field.kind) {
    case 'integer': {
      if (!/^\d+$/.test(value)) return 'Enter a whole number, 0 or more.';
      const number = Number(value);
      if (field.minimum !== undefined && number < field.minimum) return `Enter at least ${field.minimum}.`;
      if (field.maximum !== undefined && number > field.maximum) return `Enter at most ${field.maximum}.`;
      return undefined;
    }
    case 'choice':
      return field.choices?.includes(value) ? undefined : `Choose ${field.choices?.join(' or ')}.`;
    case 'text':
      if (field.pattern && !field.pattern.test(value)) {
        return field.example ? `Enter a value such as ${field.example}.` : 'This value has the wrong shape.';
      }
      return undefined;
  }
}

/** The value the API takes for a field's text. */
function valueOf(field: SettingField, text: string): unknown {
  return field.kind === 'integer' ? Number(text) : text;
}

/**
 * Checks every field that has text and puts what is fine into `body`; errors go in
 * `errors` under the setting's name. With `current`, only settings whose text
 * differs from it are sent (a PATCH that changes only what the user changed).
 */
export function collectSettings(
  fields: SettingField[],
  values: Record<string, string>,
  errors: FieldErrors,
  body: Record<string, unknown>,
  current?: Record<string, string>,
): void {
  for (const field of fields) {
    const text = (values[field.name] ?? '').trim();
    if (text === '' || (current && current[field.name] === text)) continue;
    const error = checkSetting(field, text);
    if (error) errors[field.name] = error;
    else body[field.name] = valueOf(field, text);
  }
}

/** A service's settings as form text (unset ones empty). */
export function settingValues(fields: SettingField[], service: Record<string, unknown>): Record<string, string> {
  const values: Record<string, string> = {};
  for (const field of fields) {
    const value = service[field.name];
    values[field.name] = value === null || value === undefined ? '' : String(value);
  }
  return values;
}

let loaded: Promise<SettingField[]> | null = null;

/** The settings of the API this dashboard is served by, fetched once. */
export function loadSettingFields(): Promise<SettingField[]> {
  loaded ??= fetch('/api/v1/openapi.json', { cache: 'no-store' })
    .then((response) => {
      if (!response.ok) throw new Error(`the API's document answered ${response.status}`);
      return response.json() as Promise<OpenApiDocument>;
    })
    .then(settingFields)
    .catch((error: unknown) => {
      loaded = null;
      throw error;
    });
  return loaded;
}
