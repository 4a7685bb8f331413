import { describe, expect, it } from 'vitest';

import { durationMs, validateDeploy, validateSettings } from '../src/validate';

const empty = {
  name: '',
  command: '',
  min_scale: '',
  max_scale: '',
  target_concurrency: '',
  scale_to_zero_grace: '',
  stable_window: '',
};

describe('validateDeploy', () => {
  it('sends only what was filled in', () => {
    const { errors, body } = validateDeploy({ ...empty, name: 'cart', command: 'target/release/shopping-cart' });
    expect(errors).toEqual({});
    expect(body).toEqual({ name: 'cart', command: 'target/release/shopping-cart' });
  });

  it('names each wrong field', () => {
    const { errors } = validateDeploy({
      ...empty,
      name: 'Cart!',
      min_scale: '3',
      max_scale: '2',
      target_concurrency: '0',
      scale_to_zero_grace: 'soon',
      stable_window: '2h',
    });
    expect(Object.keys(errors).sort()).toEqual([
      'command',
      'min_scale',
      'name',
      'scale_to_zero_grace',
      'stable_window',
      'target_concurrency',
    ]);
    expect(validateDeploy({ ...empty, name: 'a', command: 'x', min_scale: '-1' }).errors.min_scale).toMatch(/whole number/);
    expect(validateDeploy({ ...empty, name: 'a', command: 'x', max_scale: '0' }).errors.max_scale).toMatch(/at least 1/);
  });

  it('accepts the names the API accepts', () => {
    for (const name of ['a', 'cart', 'shopping-cart', '1a', 'x'.repeat(63)]) {
      expect(validateDeploy({ ...empty, name, command: 'x' }).errors.name).toBeUndefined();
    }
    for (const name of ['-a', 'a-', 'a_b', 'a.b', 'x'.repeat(64)]) {
      expect(validateDeploy({ ...empty, name, command: 'x' }).errors.name).toBeDefined();
    }
  });
});

describe('validateSettings and durations', () => {
  it('parses durations like the API', () => {
    expect(durationMs('30s')).toBe(30_000);
    expect(durationMs('1h30m')).toBe(5_400_000);
    expect(durationMs('250ms')).toBe(250);
    expect(durationMs('0')).toBe(0);
    expect(durationMs('30')).toBeNull();
    expect(durationMs('')).toBeNull();
  });

  it('builds the PATCH body', () => {
    const { errors, body } = validateSettings({
      min_scale: '0',
      max_scale: '5',
      target_concurrency: '10',
      scale_to_zero_grace: '45s',
      stable_window: '',
    });
    expect(errors).toEqual({});
    expect(body).toEqual({ min_scale: 0, max_scale: 5, target_concurrency: 10, scale_to_zero_grace: '45s' });
  });
});
