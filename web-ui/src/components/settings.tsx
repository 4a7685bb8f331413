// The fields of a service's settings, one per setting of the API's schema
// (`settings.ts`): the deploy form and the service page's settings form show them.

import { Field } from './ui';
import type { SettingField } from '../settings';
import type { FieldErrors } from '../validate';

export function SettingFields(props: {
  fields: SettingField[];
  values: Record<string, string>;
  errors: FieldErrors;
  onInput: (name: string, value: string) => void;
}) {
  return (
    <>
      {props.fields.map((field) => (
        <Field
          key={field.name}
          label={field.label}
          name={field.name}
          value={props.values[field.name] ?? ''}
          onInput={(value) => props.onInput(field.name, value)}
          error={props.errors[field.name]}
          inputMode={field.kind === 'integer' ? 'numeric' : undefined}
          placeholder={field.placeholder}
          choices={field.kind === 'choice' ? field.choices : undefined}
          hint={field.hint}
        />
      ))}
    </>
  );
}
