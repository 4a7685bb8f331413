import { describe, expect, it } from 'vitest';

import { settingFields } from '../src/settings';
import { validateDeploy, validateSettings } from '../src/validate';
import { DOCUMENT } from './fixtures';

const fields = settingFields(DOCUMENT);
const empty = { name: '', command: '', settings: {} };

describe('validateDeploy', () => {
  it('sends only what was filled in', () => {
    const { errors, body } = validateDeploy({ ...empty, name: 'cart', command: 'target/release/shopping-cart' }, fields);
    expect(errors).toEqual({});
    expect(body).toEqual({ name: 'cart', command: 'target/release/shopping-cart' });
  });

  it('names each wrong field', () => {
    const { errors } = validateDeploy(
      {
        name: 'Cart!',
        command: '',
        settings: {
          min_scale: 'three',
          max_scale: '0',
          target_concurrency: '0',
          stable_window: 'soon',
          keep_alive: 'sometimes',
          keep_alive_percentile: '20',
        },
      },
      fields,
    );
    expect(Object.keys(errors).sort()).toEqual([
      'command',
      'keep_alive',
      'keep_alive_percentile',
      'max_scale',
      'min_scale',
      'name',
      'stable_window',
      'target_concurrency',
    ]);
    expect(errors.max_scale).toMatch(/at least 1/);
  });

  it('accepts the names the API accepts', () => {
    for (const name of ['a', 'cart', 'shopping-cart', '1a', 'x'.repeat(63)]) {
      expect(validateDeploy({ ...empty, name, command: 'x' }, fields).errors.name).toBeUndefined();
    }
    for (const name of ['-a', 'a-', 'a_b', 'a.b', 'x'.repeat(64)]) {
      expect(validateDeploy({ ...empty, name, command: 'x' }, fields).errors.name).toBeDefined();
    }
  });
});

describe('validateSettings', () => {
  it('builds the PATCH body of what changed', () => {
    const current = { min_scale: '0', max_scale: '10', target_concurrency: '70', stable_window: '', keep_alive: 'histogram', keep_alive_percentile: '99' };
    const { errors, body } = validateSettings(fields, { ...current, max_scale: '5', stable_window: '45s' }, current);
    expect(errors).toEqual({});
    expect(body).toEqual({ max_scale: 5, stable_window: '45s' });
  });
});
