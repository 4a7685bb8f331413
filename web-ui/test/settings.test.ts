import { describe, expect, it } from 'vitest';

import { checkSetting, collectSettings, settingFields, settingValues } from '../src/settings';
import { DOCUMENT } from './fixtures';

describe('settingFields', () => {
  const fields = settingFields(DOCUMENT);

  it('makes one field per setting of the document, in its order', () => {
    expect(fields.map((field) => field.name)).toEqual([
      'min_scale',
      'max_scale',
      'target_concurrency',
      'stable_window',
      'keep_alive',
      'keep_alive_percentile',
    ]);
    expect(fields.map((field) => field.label)).toContain('Keep alive percentile');
  });

  it("offers the document's defaults, and says when the platform decides", () => {
    const placeholders = Object.fromEntries(fields.map((field) => [field.name, field.placeholder]));
    expect(placeholders).toEqual({
      min_scale: '0',
      max_scale: '10',
      target_concurrency: '70',
      stable_window: 'default',
      keep_alive: 'histogram',
      keep_alive_percentile: '99',
    });
  });

  it('reads kinds, bounds, choices and patterns through references and nulls', () => {
    const byName = Object.fromEntries(fields.map((field) => [field.name, field]));
    expect(byName.keep_alive_percentile).toMatchObject({ kind: 'integer', minimum: 50, maximum: 100 });
    expect(byName.keep_alive).toMatchObject({ kind: 'choice', choices: ['fixed', 'histogram'] });
    expect(byName.stable_window).toMatchObject({ kind: 'text', example: '30s' });
    // The hint is the description, less the default the placeholder already shows.
    expect(byName.target_concurrency.hint).toBe('Requests in flight per instance that the autoscaler aims for, at least 1.');
    expect(byName.keep_alive.hint).toBe('How the last instance is kept once traffic stops.');
    expect(byName.stable_window.hint).toBe(
      'How far back the autoscaler averages load, 1s to 1h, e.g. "60s". Default: the platform\'s.',
    );
  });

  it('refuses a document without settings, or a setting it cannot show', () => {
    expect(() => settingFields({ components: { schemas: {} } })).toThrow(/no ServiceSettings/);
    const odd = { components: { schemas: { ServiceSettings: { properties: { weights: { type: 'array' } } } } } };
    expect(() => settingFields(odd)).toThrow(/weights/);
  });
});

describe('checkSetting and collectSettings', () => {
  const fields = settingFields(DOCUMENT);
  const byName = Object.fromEntries(fields.map((field) => [field.name, field]));

  it('checks each kind by its schema', () => {
    expect(checkSetting(byName.max_scale, '')).toBeUndefined();
    expect(checkSetting(byName.max_scale, '0')).toMatch(/at least 1/);
    expect(checkSetting(byName.min_scale, '-1')).toMatch(/whole number/);
    expect(checkSetting(byName.keep_alive_percentile, '101')).toMatch(/at most 100/);
    expect(checkSetting(byName.keep_alive, 'sometimes')).toMatch(/fixed or histogram/);
    expect(checkSetting(byName.stable_window, 'soon')).toMatch(/such as 30s/);
    expect(checkSetting(byName.stable_window, '1m30s')).toBeUndefined();
    expect(checkSetting(byName.stable_window, '30')).toMatch(/such as 30s/);
  });

  it('sends only what was filled in, typed as the API takes it', () => {
    const errors = {};
    const body: Record<string, unknown> = {};
    collectSettings(fields, { min_scale: '2', stable_window: ' 45s ', keep_alive: 'fixed', max_scale: '' }, errors, body);
    expect(errors).toEqual({});
    expect(body).toEqual({ min_scale: 2, stable_window: '45s', keep_alive: 'fixed' });
  });

  it('sends only what changed from the current values', () => {
    const current = settingValues(fields, { min_scale: 0, max_scale: 10, keep_alive: 'histogram', stable_window: null });
    expect(current).toMatchObject({ min_scale: '0', stable_window: '' });
    const body: Record<string, unknown> = {};
    collectSettings(fields, { ...current, max_scale: '4' }, {}, body, current);
    expect(body).toEqual({ max_scale: 4 });
  });
});
