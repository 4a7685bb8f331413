// Small building blocks shared by the pages: links that route in the page, labelled
// form fields with their error, badges, and the "could not load" message.

import type { ComponentChildren, JSX } from 'preact';

import { ApiError } from '../api';
import { serviceHealth } from '../format';
import { BASE, navigate } from '../router';
import type { Service } from '../types';

export function Link(props: { href: string; children: ComponentChildren; class?: string; 'aria-current'?: 'page' }) {
  const onClick = (event: MouseEvent) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(props.href);
  };
  return (
    <a href={BASE + props.href} onClick={onClick} class={props.class} aria-current={props['aria-current']}>
      {props.children}
    </a>
  );
}

let nextFieldId = 0;

export interface FieldProps {
  label: string;
  name: string;
  value: string;
  onInput: (value: string) => void;
  error?: string;
  hint?: string;
  type?: string;
  placeholder?: string;
  required?: boolean;
  inputMode?: JSX.HTMLAttributes['inputMode'];
  autoComplete?: string;
  /** Offer these values in a list instead of a text box; empty stays a choice (the placeholder's). */
  choices?: string[];
}

export function Field(props: FieldProps) {
  const id = `field-${props.name}-${nextFieldId++ % 1000}`;
  const described = [props.hint ? `${id}-hint` : '', props.error ? `${id}-error` : ''].filter(Boolean).join(' ');
  return (
    <div class={`field${props.error ? ' has-error' : ''}`}>
      <label for={id}>
        {props.label}
        {props.required ? <span aria-hidden="true"> *</span> : null}
      </label>
      {props.choices ? (
        <select
          id={id}
          name={props.name}
          value={props.value}
          aria-invalid={props.error ? 'true' : undefined}
          aria-describedby={described || undefined}
          onChange={(event) => props.onInput((event.target as HTMLSelectElement).value)}
        >
          <option value="">{props.placeholder === undefined || props.placeholder === 'default' ? 'default' : `${props.placeholder} (default)`}</option>
          {props.choices.map((choice) => (
            <option key={choice} value={choice}>
              {choice}
            </option>
          ))}
        </select>
      ) : (
        <input
          id={id}
          name={props.name}
          type={props.type ?? 'text'}
          value={props.value}
          placeholder={props.placeholder}
          required={props.required}
          inputMode={props.inputMode}
          autoComplete={props.autoComplete ?? 'off'}
          aria-invalid={props.error ? 'true' : undefined}
          aria-describedby={described || undefined}
          onInput={(event) => props.onInput((event.target as HTMLInputElement).value)}
        />
      )}
      {props.hint ? (
        <p class="hint" id={`${id}-hint`}>
          {props.hint}
        </p>
      ) : null}
      {props.error ? (
        <p class="error-text" id={`${id}-error`} role="alert">
          {props.error}
        </p>
      ) : null}
    </div>
  );
}

export function StatusBadge({ service }: { service: Service }) {
  const health = serviceHealth(service);
  return (
    <span class={`badge badge-${health.health}`} title={health.detail}>
      {health.label}
    </span>
  );
}

export function LoadError({ error, what }: { error: Error | undefined; what: string }) {
  if (!error) return null;
  if (error instanceof ApiError && error.status === 0) return null; // the banner says it
  return (
    <p class="notice notice-error" role="alert">
      Could not load {what}: {error.message}
    </p>
  );
}

export function Card(props: { title: string; children: ComponentChildren; class?: string; actions?: ComponentChildren }) {
  return (
    <section class={`card ${props.class ?? ''}`} aria-label={props.title}>
      <header class="card-header">
        <h2>{props.title}</h2>
        {props.actions ? <div class="card-actions">{props.actions}</div> : null}
      </header>
      {props.children}
    </section>
  );
}
