// Deploy a new service: the API's fields, checked here first and then by the API,
// with each error shown beside its field. The settings' fields, defaults and checks
// are the API's own schema's (`settings.ts`).

import { useState } from 'preact/hooks';

import { api, ApiError, encode } from '../api';
import { SettingFields } from '../components/settings';
import { Card, Field, LoadError } from '../components/ui';
import { useCanWrite } from '../context';
import { usePoll } from '../hooks';
import { navigate } from '../router';
import { loadSettingFields } from '../settings';
import type { Service } from '../types';
import { validateDeploy, type DeployForm, type FieldErrors } from '../validate';

const EMPTY: DeployForm = { name: '', command: '', settings: {} };

export function DeployPage() {
  const canWrite = useCanWrite();
  const [form, setForm] = useState<DeployForm>(EMPTY);
  const [errors, setErrors] = useState<FieldErrors>({});
  const [busy, setBusy] = useState(false);
  const fields = usePoll(loadSettingFields, 0, []);

  if (!canWrite) {
    return (
      <div class="page">
        <h1>Deploy a service</h1>
        <p class="notice">This token may only read. Sign in with the admin token to deploy.</p>
      </div>
    );
  }

  if (!fields.data) {
    return (
      <div class="page">
        <h1>Deploy a service</h1>
        {fields.error ? <LoadError error={fields.error} what="the settings a service takes" /> : <p>Loading…</p>}
      </div>
    );
  }
  const settingFields = fields.data;
  const set = (field: 'name' | 'command') => (value: string) => setForm({ ...form, [field]: value });
  const setSetting = (name: string, value: string) => setForm({ ...form, settings: { ...form.settings, [name]: value } });
  const submit = async (event: Event) => {
    event.preventDefault();
    const { errors: found, body } = validateDeploy(form, settingFields);
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
            <SettingFields fields={settingFields} values={form.settings} errors={errors} onInput={setSetting} />
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
