// Deploy a new service: the API's fields, checked here first and then by the API,
// with each error shown beside its field.

import { useState } from 'preact/hooks';

import { api, ApiError, encode } from '../api';
import { Card, Field } from '../components/ui';
import { useCanWrite } from '../context';
import { navigate } from '../router';
import type { Service } from '../types';
import { validateDeploy, type DeployForm, type FieldErrors } from '../validate';

const EMPTY: DeployForm = {
  name: '',
  command: '',
  min_scale: '',
  max_scale: '',
  target_concurrency: '',
  scale_to_zero_grace: '',
  stable_window: '',
};

export function DeployPage() {
  const canWrite = useCanWrite();
  const [form, setForm] = useState<DeployForm>(EMPTY);
  const [errors, setErrors] = useState<FieldErrors>({});
  const [busy, setBusy] = useState(false);

  if (!canWrite) {
    return (
      <div class="page">
        <h1>Deploy a service</h1>
        <p class="notice">This token may only read. Sign in with the admin token to deploy.</p>
      </div>
    );
  }

  const set = (field: keyof DeployForm) => (value: string) => setForm({ ...form, [field]: value });
  const submit = async (event: Event) => {
    event.preventDefault();
    const { errors: found, body } = validateDeploy(form);
    setErrors(found);
    if (Object.keys(found).length > 0) {
      const first = document.querySelector<HTMLInputElement>(`input[name="${Object.keys(found)[0]}"]`);
      first?.focus();
      return;
    }
    setBusy(true);
    try {
      const created = await api.post<Service>('/services', body);
      navigate(`/services/${encode(created.name)}`);
    } catch (error) {
      if (error instanceof ApiError) setErrors({ [error.field ?? '_']: error.message });
      else setErrors({ _: String(error) });
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="page">
      <h1>Deploy a service</h1>
      <Card title="New service">
        <form class="form" onSubmit={submit} aria-label="Deploy a service" noValidate>
          <div class="form-grid">
            <Field label="Name" name="name" value={form.name} onInput={set('name')} error={errors.name} required placeholder="cart" hint="Lowercase letters, digits and -" />
            <Field
              label="Command"
              name="command"
              value={form.command}
              onInput={set('command')}
              error={errors.command}
              required
              placeholder="target/release/shopping-cart"
              hint="Runs once per instance with HOST and PORT set, in the directory strata dev runs in"
            />
            <Field label="Min scale" name="min_scale" value={form.min_scale} onInput={set('min_scale')} error={errors.min_scale} inputMode="numeric" placeholder="0" />
            <Field label="Max scale" name="max_scale" value={form.max_scale} onInput={set('max_scale')} error={errors.max_scale} inputMode="numeric" placeholder="10" />
            <Field
              label="Target concurrency"
              name="target_concurrency"
              value={form.target_concurrency}
              onInput={set('target_concurrency')}
              error={errors.target_concurrency}
              inputMode="numeric"
              placeholder="100"
              hint="Requests in flight per instance the autoscaler aims for"
            />
            <Field
              label="Scale-to-zero grace"
              name="scale_to_zero_grace"
              value={form.scale_to_zero_grace}
              onInput={set('scale_to_zero_grace')}
              error={errors.scale_to_zero_grace}
              placeholder="30s"
              hint="Idle time before the last instance stops"
            />
            <Field
              label="Stable window"
              name="stable_window"
              value={form.stable_window}
              onInput={set('stable_window')}
              error={errors.stable_window}
              placeholder="60s"
              hint="How far back the autoscaler averages load (1s to 1h)"
            />
          </div>
          {errors._ ? (
            <p class="error-text" role="alert">
              {errors._}
            </p>
          ) : null}
          <div class="form-actions">
            <button type="submit" class="button button-primary" disabled={busy}>
              {busy ? 'Deploying…' : 'Deploy'}
            </button>
          </div>
        </form>
      </Card>
    </div>
  );
}
