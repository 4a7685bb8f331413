// End-to-end test of the dashboard in a real headless Chromium (Debian's, driven by
// playwright-core) against a real `strata dev` with the Rust shopping cart: sign in,
// deploy the cart through the form, send traffic and watch the instances and the
// request chart move, read the instances' logs, inspect one cart's journal, watch the service reach zero,
// watch a schedule run on the schedules page and the service's timers card, read the audit log, see the cluster's leader, lose the API and get it back, and check that a
// read-only token sees no write controls, at desktop and phone widths.
//
//   node e2e/dashboard.e2e.mjs
//
// STRATA_BIN and CART_BIN name the binaries (default: ../target/debug/strata and
// ../target/debug/shopping-cart); CHROMIUM the browser (default /usr/bin/chromium);
// screenshots go to e2e/screenshots/. Ends with "N passed, M failed".

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const STRATA = process.env.STRATA_BIN ?? join(root, 'target/debug/strata');
const CART = process.env.CART_BIN ?? join(root, 'target/debug/shopping-cart');
const BROWSER = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOTS ?? join(here, 'screenshots');
const ADMIN = 'e2e-admin-token';
const READER = 'e2e-read-only-token';
/** Generous bounds for conditions on a loaded 2-core machine; nothing waits for them unless it must. */
const LONG = 120_000;

let passed = 0;
let failed = 0;
const work = mkdtempSync(join(tmpdir(), 'strata-ui-e2e-'));
mkdirSync(SHOTS, { recursive: true });

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

const gatewayPort = await freePort();
const apiPort = await freePort();
const API = `http://127.0.0.1:${apiPort}`;
const GATEWAY = `http://127.0.0.1:${gatewayPort}`;
const logPath = join(work, 'strata-dev.log');

let dev = null;
async function startDev() {
  const { openSync } = await import('node:fs');
  const log = openSync(logPath, 'a');
  dev = spawn(
    STRATA,
    [
      'dev',
      '--data-dir', join(work, 'strata'),
      '--listen', `127.0.0.1:${gatewayPort}`,
      '--api-listen', `127.0.0.1:${apiPort}`,
      '--token', ADMIN,
      '--read-only-token', READER,
      '--stable-window', '6s',
    ],
    { cwd: work, stdio: ['ignore', log, log] },
  );
  await until('strata dev answers', async () => (await fetch(`${API}/api/v1/access`, auth(ADMIN)).catch(() => null))?.ok);
}

async function stopDev() {
  if (!dev || dev.exitCode !== null) return;
  const exited = new Promise((done) => dev.once('exit', done));
  dev.kill('SIGTERM');
  await exited;
}

function auth(token) {
  return { headers: { authorization: `Bearer ${token}` } };
}

async function until(what, check, timeout = LONG) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((done) => setTimeout(done, 200));
  }
  throw new Error(`${what}: never happened (last: ${last})`);
}

async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    passed++;
    console.log(`ok - ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
  } catch (error) {
    failed++;
    console.log(`not ok - ${name}\n  ${String(error?.stack ?? error).split('\n').join('\n  ')}`);
    throw error;
  }
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Every visible form control has a name a screen reader can read, and no page scrolls sideways. */
async function checkAccessible(page, where) {
  const problems = await page.evaluate(() => {
    const out = [];
    for (const element of document.querySelectorAll('input, select, button, a[href], textarea')) {
      if (!element.offsetParent && element.getClientRects().length === 0) continue;
      const id = element.getAttribute('id');
      const labelled =
        (id && document.querySelector(`label[for="${id}"]`)) ||
        element.getAttribute('aria-label') ||
        element.closest('label') ||
        (element.textContent ?? '').trim();
      if (!labelled) out.push(element.outerHTML.slice(0, 80));
      if (element.tabIndex < 0) out.push(`not reachable by keyboard: ${element.outerHTML.slice(0, 80)}`);
    }
    if (document.documentElement.scrollWidth > window.innerWidth + 1) {
      out.push(`scrolls sideways: ${document.documentElement.scrollWidth} > ${window.innerWidth}`);
    }
    return out;
  });
  if (problems.length) throw new Error(`${where}: ${problems.join('; ')}`);
}

async function signIn(page, token) {
  await page.goto(`${API}/ui/`);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Services' }).waitFor();
}

async function readyReplicas(page) {
  return Number(await page.getByTestId('ready-replicas').textContent());
}

/** Keeps `clients` loops of cart commands going through the gateway until stopped. */
function traffic(clients) {
  let running = true;
  let answered = 0;
  let refused = 0;
  const loops = Array.from({ length: clients }, async (_, client) => {
    let n = 0;
    while (running) {
      const user = `user-${client}`;
      const response = await fetch(`${GATEWAY}/cart/${user}/items/add`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ productId: `p${n % 3}`, name: `Thing ${n % 3}`, quantity: 1 }),
      }).catch(() => null);
      if (response?.ok) answered++;
      else refused++;
      await response?.arrayBuffer().catch(() => {});
      n++;
    }
  });
  return {
    stats: () => ({ answered, refused }),
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

const browser = await chromium.launch({
  executablePath: BROWSER,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

let page;
let load;
/** A second control-plane node, for adding and removing a member. */
let second = null;
try {
  await startDev();
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await desktop.newPage();

  await step('a wrong token is refused and the prompt says so', async () => {
    await page.goto(`${API}/ui/`);
    await page.getByLabel('API token').fill('not-the-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That token was refused').waitFor();
    await shot(page, 'sign-in');
  });

  await step('the admin signs in and sees no services yet', async () => {
    await signIn(page, ADMIN);
    await page.getByText('No services yet').waitFor();
    await page.getByText('leader elected').waitFor();
    await checkAccessible(page, 'overview');
  });

  await step('the deploy form offers every setting of the API with the defaults the registry applies', async () => {
    await page.getByRole('link', { name: 'Deploy a service' }).click();
    await page.getByLabel('Name').waitFor();
    const document = await (await fetch(`${API}/api/v1/openapi.json`)).json();
    const settings = Object.entries(document.components.schemas.ServiceSettings.properties);
    if (settings.length < 10) throw new Error(`the API's document has only ${settings.length} settings`);
    // A service given nothing but its name and command shows the defaults it got.
    const created = await fetch(`${API}/api/v1/services`, {
      method: 'POST',
      headers: { ...auth(ADMIN).headers, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'defaults', command: 'true' }),
    });
    if (created.status !== 201) throw new Error(`creating a service with defaults: HTTP ${created.status}`);
    const applied = await created.json();
    await fetch(`${API}/api/v1/services/defaults`, { method: 'DELETE', ...auth(ADMIN) });
    for (const [name, property] of settings) {
      const control = page.locator(`input[name="${name}"], select[name="${name}"]`);
      if ((await control.count()) !== 1) throw new Error(`the deploy form has no field for the setting ${name}`);
      // A text box shows the default as its placeholder, a list as its first, empty, choice.
      const placeholder = await control.evaluate((element) =>
        element.tagName === 'SELECT' ? element.options[0].textContent.replace(/ \(default\)$/, '') : element.getAttribute('placeholder'),
      );
      const hasDefault = property.default !== undefined && property.default !== null;
      const offered = hasDefault ? String(property.default) : 'default';
      if (placeholder !== offered) throw new Error(`${name}: the form offers ${placeholder}, the API's document ${offered}`);
      const got = applied[name] === null ? 'default' : String(applied[name]);
      if (hasDefault && got !== placeholder) throw new Error(`${name}: the form offers ${placeholder}, the registry applied ${got}`);
    }
  });

  await step('the deploy form shows validation errors next to their fields', async () => {
    await page.getByLabel('Name').fill('Cart!');
    await page.getByLabel('Max scale').fill('0');
    await page.getByRole('button', { name: 'Deploy' }).click();
    const fieldError = (label) => page.locator('.field.has-error', { has: page.getByLabel(label) }).locator('.error-text');
    await fieldError('Name').getByText('lowercase letters').waitFor();
    await fieldError('Command').waitFor();
    await fieldError('Max scale').getByText('at least 1').waitFor();
    await checkAccessible(page, 'deploy');
    await shot(page, 'deploy-errors');
  });

  await step('the cart is deployed through the form', async () => {
    await page.getByLabel('Name').fill('cart');
    await page.getByLabel('Command').fill(CART);
    await page.getByLabel('Min scale').fill('0');
    await page.getByLabel('Max scale').fill('3');
    await page.getByLabel('Target concurrency').fill('1');
    await page.getByLabel('Scale to zero grace').fill('5s');
    await page.getByLabel('Stable window').fill('6s');
    await page.getByLabel('Keep alive', { exact: true }).selectOption('fixed');
    await page.getByLabel('Hold timeout').fill('2m');
    await shot(page, 'deploy');
    await page.getByRole('button', { name: 'Deploy' }).click();
    await page.waitForURL(`${API}/ui/services/cart`);
    await page.getByRole('heading', { name: /Service\s+cart/ }).waitFor();
    const service = await (await fetch(`${API}/api/v1/services/cart`, auth(READER))).json();
    const got = [service.target_concurrency, service.keep_alive, service.hold_timeout, service.shard_count];
    if (JSON.stringify(got) !== JSON.stringify([1, 'fixed', '2m', 64])) throw new Error(`deployed with ${JSON.stringify(got)}`);
  });

  await step('deploying the same name again shows the API\'s refusal', async () => {
    // The same tab keeps its token across a reload (session storage).
    await page.goto(`${API}/ui/deploy`);
    await page.getByLabel('Name').fill('cart');
    await page.getByLabel('Command').fill(CART);
    await page.getByRole('button', { name: 'Deploy' }).click();
    await page.getByText('already exists').waitFor();
    await page.goBack();
    await page.getByRole('heading', { name: /Service\s+cart/ }).waitFor();
  });

  await step('the first instance becomes ready', async () => {
    await until('one ready instance', async () => (await readyReplicas(page)) >= 1);
    await page.locator('.timeline').getByText('instance ready').first().waitFor();
  });

  await step('the Logs card shows the line the function printed, with its instance', async () => {
    const instances = await (await fetch(`${API}/api/v1/services/cart/instances`, auth(READER))).json();
    const id = instances.instances[0].id;
    const line = page.locator('.logs .log-function', { hasText: 'user function listening' }).first();
    await line.waitFor();
    if (!((await line.locator('.log-instance').textContent()) ?? '').includes(id)) {
      throw new Error(`the function's line does not name its instance ${id}`);
    }
    await page.locator('.logs .log-sidecar').first().waitFor();
    await shot(page, 'service-logs');
  });

  await step('the Traces card lists a traced call and opens its waterfall', async () => {
    const trace = '5bf92f3577b34da6a3ce929d0e0e4731';
    const answer = await fetch(`${GATEWAY}/cart/traced/items/add`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: `00-${trace}-00f067aa0ba902b7-01` },
      body: JSON.stringify({ productId: 'p', name: 'Thing', quantity: 1 }),
    });
    if (!answer.ok) throw new Error(`the traced call answered ${answer.status}`);
    const row = page.locator(`tr[data-trace="${trace}"]`);
    await row.waitFor({ timeout: LONG });
    await row.getByRole('button').click();
    const waterfall = page.locator(`[data-waterfall="${trace}"]`);
    for (const span of ['gateway', 'sidecar', 'function', 'store write']) {
      await waterfall.locator(`li[data-span^="${span}"]`).first().waitFor();
    }
    const sidecar = waterfall.locator('li[data-span^="sidecar"]').first();
    await sidecar.locator('summary').click();
    await sidecar.locator('.span-attributes').getByText('traced', { exact: true }).waitFor();
    await shot(page, 'service-trace');
    // A failed call the client did not sample: no hop made spans for it, but the
    // gateway's record of it is kept, and the page links to it.
    const failing = '6bf92f3577b34da6a3ce929d0e0e4732';
    const failed = await fetch(`${GATEWAY}/cart/broken/items/add`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: `00-${failing}-00f067aa0ba902b7-00` },
      body: JSON.stringify({ productId: 'p', name: 'Thing', quantity: 0 }),
    });
    if (failed.ok) throw new Error(`a quantity of 0 answered ${failed.status}`);
    const links = page.locator('[data-trace-links]');
    await links.getByText('no cold start kept').waitFor();
    const failedLink = links.getByRole('link', { name: 'failed call' });
    await failedLink.waitFor({ timeout: LONG });
    await until('the link names the failed call', async () => ((await failedLink.getAttribute('href')) ?? '').endsWith(`?trace=${failing}`), LONG);
    await failedLink.click();
    const record = page.locator(`[data-waterfall="${failing}"]`);
    await record.locator('[data-unsampled]').waitFor();
    await record.locator('li.span-error[data-span^="gateway"]').waitFor();
    if ((await record.locator('li[data-span]').count()) !== 1) throw new Error('an unsampled call shows more than its record');
  });

  await step('under load, ready instances and the request chart go up', async () => {
    const before = await readyReplicas(page);
    load = traffic(24);
    await until('more ready instances', async () => (await readyReplicas(page)) > before, LONG);
    await until('requests on the chart', async () => {
      const summary = await page.locator('figure', { hasText: 'Requests per second' }).locator('.chart-summary').textContent();
      return Number.parseFloat(summary) > 0;
    });
    await until('latency on the chart', async () => {
      const summary = await page.locator('figure', { hasText: 'Latency' }).locator('.chart-summary').textContent();
      return !summary.includes('p99 –');
    });
    // The autoscaler's reasons, as it states them, are on the timeline.
    await page.locator('.timeline').getByText(/desired replicas \d+ -> \d+: (stable|panic)/).first().waitFor();
    // Every shard has an owner among the ready instances.
    await until('shards spread over the instances', async () => (await page.locator('.legend li').count()) >= 2);
    // Let the charts collect a little history for the screenshot: at least 15
    // samples with requests in them (a condition on the API, not a fixed sleep).
    await until('15 seconds of load on record', async () => {
      const response = await fetch(`${API}/api/v1/services/cart/metrics?window=2m`, auth(READER));
      const { samples } = await response.json();
      return samples.filter((sample) => sample.requests_per_second > 0).length >= 15;
    });
    await until('the page draws them', async () => Number(await page.locator('.charts').getAttribute('data-samples')) >= 15);
    await checkAccessible(page, 'service');
    await shot(page, 'service-under-load');
    const { answered } = load.stats();
    if (answered === 0) throw new Error('no request was answered');
  });

  await step('the overview shows the load', async () => {
    await page.getByRole('link', { name: 'Services' }).click();
    const row = page.locator('tr[data-service="cart"]');
    await row.getByText('serving').waitFor();
    await until('requests per second on the overview', async () => {
      const cells = await row.locator('td.num').allTextContents();
      return Number.parseFloat(cells[1]) > 0;
    });
    await shot(page, 'overview');
  });

  await step('the entity inspector shows one cart\'s state and journal', async () => {
    await load.stop();
    const { answered, refused } = load.stats();
    console.log(`  traffic: ${answered} answered, ${refused} refused`);
    await page.getByRole('link', { name: 'Entities' }).click();
    await page.getByLabel('Service').selectOption('cart');
    await page.getByLabel('Entity id').fill('user-1');
    await page.getByRole('button', { name: 'Inspect' }).click();
    await page.getByRole('heading', { name: 'Journal, newest first' }).waitFor();
    const events = page.locator('.journal-event');
    await events.first().waitFor();
    await page.locator('.journal').getByText('com.example.shoppingcart.persistence.ItemAdded').first().waitFor();
    await page.locator('.journal').getByText('"productId"').first().waitFor();
    const first = Number((await events.first().locator('.seq').textContent()).slice(1));
    const second = Number((await events.nth(1).locator('.seq').textContent()).slice(1));
    if (!(first > second)) throw new Error(`events are not newest first: #${first} then #${second}`);
    if ((await events.count()) === 20 && first > 20) {
      await page.getByRole('button', { name: 'Older' }).click();
      await until('an older page', async () => Number((await events.first().locator('.seq').textContent()).slice(1)) < second);
    }
    await checkAccessible(page, 'entities');
    await shot(page, 'entity-inspector');
  });

  await step('an unknown entity says "no such entity"', async () => {
    await page.getByLabel('Entity id').fill('nobody-at-all');
    await page.getByRole('button', { name: 'Inspect' }).click();
    await page.getByTestId('no-such-entity').waitFor();
  });

  await step('idle, the service scales to zero', async () => {
    await page.getByRole('link', { name: 'Services' }).click();
    const row = page.locator('tr[data-service="cart"]');
    await row.getByText('scaled to zero').waitFor({ timeout: LONG });
    await page.getByRole('link', { name: 'cart' }).click();
    await until('zero ready instances', async () => (await readyReplicas(page)) === 0);
    await page.getByText('No instances: the service is scaled to zero.').waitFor();
    await page.locator('.timeline').getByText(/-> 0: scale to zero/).first().waitFor();
    await shot(page, 'service-scaled-to-zero');
  });

  await step('settings are edited from the service page', async () => {
    const before = await (await fetch(`${API}/api/v1/services/cart`, auth(READER))).json();
    await page.getByLabel('Max scale').fill('4');
    await page.getByLabel('Hold timeout').fill('90s');
    await page.getByRole('button', { name: 'Save settings' }).click();
    await page.getByText('Saved.').waitFor();
    const service = await (await fetch(`${API}/api/v1/services/cart`, auth(READER))).json();
    if (service.max_scale !== 4) throw new Error(`max_scale is ${service.max_scale} after saving 4`);
    if (service.hold_timeout !== '90s') throw new Error(`hold_timeout is ${service.hold_timeout} after saving 90s`);
    // Settings are a new generation of the service, not a new revision of what runs.
    if (service.generation !== before.generation + 1) throw new Error(`generation ${before.generation} -> ${service.generation}`);
    if (service.revision !== before.revision) throw new Error(`revision ${before.revision} -> ${service.revision} for settings alone`);
    // --- the shard count is fixed once the service exists: the API says so beside it
    await page.getByLabel('Shard count').fill('8');
    await page.getByRole('button', { name: 'Save settings' }).click();
    await page.locator('.field.has-error', { has: page.getByLabel('Shard count') }).getByText('fixed once a service exists').waitFor();
    await page.getByLabel('Shard count').fill('64');
  });

  await step('a new revision is diffed against the first and rolled back from the service page', async () => {
    const patched = await fetch(`${API}/api/v1/services/cart`, {
      method: 'PATCH',
      headers: { ...auth(ADMIN).headers, 'content-type': 'application/json' },
      body: JSON.stringify({ env: [{ name: 'LABEL', value: 'two' }] }),
    });
    if (patched.status !== 200) throw new Error(`deploying revision 2: HTTP ${patched.status}`);
    const card = page.getByRole('region', { name: 'Revisions' });
    await card.locator('tr[data-revision="2"]').getByText('serving').waitFor({ timeout: LONG });
    await card.locator('tr[data-revision="2"]').getByText('LABEL="two"').waitFor();
    // --- the diff from 1 to 2 names the variable that changed
    const changes = card.getByRole('table', { name: 'Changes' });
    await changes.getByRole('row', { name: /env LABEL/ }).waitFor();
    await shot(page, 'service-revisions');
    // --- roll back to 1, confirming first
    await card.locator('tr[data-revision="1"]').getByRole('button', { name: 'Roll back to 1…' }).click();
    await card.getByRole('button', { name: 'Serve revision 1' }).click();
    await card.locator('tr[data-revision="1"]').getByText('serving').waitFor({ timeout: LONG });
    const revisions = await (await fetch(`${API}/api/v1/services/cart/revisions`, auth(READER))).json();
    if (revisions.serving !== 1) throw new Error(`serving ${revisions.serving} after the rollback`);
  });

  await step('a canary shows its split on the service page and is ended from there', async () => {
    const split = await fetch(`${API}/api/v1/services/cart/traffic`, {
      method: 'POST',
      headers: { ...auth(ADMIN).headers, 'content-type': 'application/json' },
      body: JSON.stringify({ revision: 2, percent: 25 }),
    });
    if (split.status !== 200) throw new Error(`a canary of revision 2: HTTP ${split.status} ${await split.text()}`);
    const card = page.getByRole('region', { name: 'Revisions' });
    const notice = card.getByTestId('canary');
    await notice.getByText(/Canary: revision 2 serves 25% of the traffic \(\d+ shards\), revision 1 the rest\./).waitFor({ timeout: LONG });
    await card.locator('tr[data-revision="2"]').getByText('canary 25%').waitFor();
    await shot(page, 'service-canary');
    await notice.getByRole('button', { name: 'End the canary' }).click();
    await notice.waitFor({ state: 'detached', timeout: LONG });
    const revisions = await (await fetch(`${API}/api/v1/services/cart/revisions`, auth(READER))).json();
    if (revisions.canary || revisions.serving !== 1) throw new Error(`after ending the canary: ${JSON.stringify(revisions)}`);
  });

  await step('the schedules page shows a schedule\'s next and last run, the service page its timers', async () => {
    const created = await fetch(`${API}/api/v1/schedules`, {
      method: 'POST',
      headers: { ...auth(ADMIN).headers, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'tick',
        cron: '* * * * * *',
        service: 'cart',
        method: 'com.example.shoppingcart.ShoppingCart/AddItem',
        body: { userId: 'scheduled', productId: 'p', name: 'Tick', quantity: 1 },
      }),
    });
    if (created.status !== 201) throw new Error(`creating the schedule: HTTP ${created.status} ${await created.text()}`);
    await page.getByRole('link', { name: 'Schedules' }).click();
    await page.getByRole('heading', { level: 1, name: 'Schedules' }).waitFor();
    const row = page.locator('tr[data-schedule="tick"]');
    await row.getByText('* * * * * *').waitFor();
    await row.locator('td[data-last-run]').getByText(/ok$/).waitFor({ timeout: LONG });
    await row.locator('td[data-next-run]').getByText(/^(now|in \d+s)$/).waitFor();
    await checkAccessible(page, 'schedules');
    await shot(page, 'schedules');
    const deleted = await fetch(`${API}/api/v1/schedules/tick`, { method: 'DELETE', ...auth(ADMIN) });
    if (deleted.status !== 204) throw new Error(`deleting the schedule: HTTP ${deleted.status}`);
    await row.waitFor({ state: 'detached' });
    await page.getByText('No schedules yet.').waitFor();
    // The cart schedules no timers of its own: the card says so.
    await page.getByRole('link', { name: 'Services' }).click();
    await page.getByRole('link', { name: 'cart' }).click();
    await page.locator('[data-timer-counts]').getByText('0 pending, 0 failed').waitFor();
    await page.getByText('No pending timers.').waitFor();
  });

  await step('a service that cannot start shows "failing" with its reason, and is deleted', async () => {
    const created = await fetch(`${API}/api/v1/services`, {
      method: 'POST',
      headers: { ...auth(ADMIN).headers, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'broken', command: join(work, 'no-such-function'), min_scale: 1 }),
    });
    if (created.status !== 201) throw new Error(`creating broken: HTTP ${created.status}`);
    await page.getByRole('link', { name: 'Services' }).click();
    const row = page.locator('tr[data-service="broken"]');
    await row.getByText('failing').waitFor({ timeout: LONG });
    const reason = (await row.locator('.failure-reason').textContent()) ?? '';
    if (reason.trim().length < 5) throw new Error(`no failure reason: "${reason}"`);
    await shot(page, 'overview-failing');
    await page.getByRole('link', { name: 'broken' }).click();
    await page.getByRole('button', { name: 'Delete service…' }).click();
    await page.getByRole('button', { name: 'Delete broken now' }).click();
    await page.getByRole('heading', { level: 1, name: 'Services' }).waitFor();
    await row.waitFor({ state: 'detached' });
  });

  await step('the audit page lists the writes, newest first, with who made them', async () => {
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByRole('heading', { level: 1, name: 'Audit log' }).waitFor();
    const rows = page.locator('table.audit tbody tr');
    // The last write was deleting the broken service; the cart's deploy is further down.
    await rows.first().getByText('DELETE /api/v1/services/broken').waitFor();
    await page.locator('tr', { hasText: 'POST /api/v1/services' }).filter({ hasText: 'cart' }).first().waitFor();
    await page.locator('tr', { hasText: 'PATCH /api/v1/services/cart' }).first().getByText('admin').waitFor();
    const ids = await rows.evaluateAll((all) => all.map((row) => Number(row.getAttribute('data-audit-id'))));
    if (ids.some((id, i) => i > 0 && id >= ids[i - 1])) throw new Error(`not newest first: ${ids.join(',')}`);
    await checkAccessible(page, 'audit');
    await shot(page, 'audit');
  });

  await step('the cluster page names the leader and refuses to remove the last voter', async () => {
    await page.getByRole('link', { name: 'Cluster' }).click();
    await page.getByTestId('leader').getByText('node 1').waitFor();
    await page.locator('tr', { hasText: 'node 1' }).getByText('leader').waitFor();
    await checkAccessible(page, 'cluster');
    await shot(page, 'cluster');
    await page.getByRole('button', { name: 'Remove…' }).click();
    await page.getByRole('button', { name: 'Remove node 1' }).click();
    await page.getByText('last voter').waitFor();
    await page.getByRole('button', { name: 'Cancel' }).click();
  });

  await step('keyboard alone reaches the navigation and the deploy button', async () => {
    await page.getByRole('link', { name: 'Services' }).click();
    await page.getByRole('heading', { level: 1, name: 'Services' }).waitFor();
    const reached = new Set();
    for (let i = 0; i < 20; i++) {
      await page.keyboard.press('Tab');
      reached.add(await page.evaluate(() => document.activeElement?.textContent?.trim()));
    }
    for (const name of ['Services', 'Entities', 'Cluster', 'Deploy a service']) {
      if (!reached.has(name)) throw new Error(`Tab never reached "${name}" (reached: ${[...reached].join(' | ')})`);
    }
  });

  await step('a lost API shows a banner and the page recovers by itself', async () => {
    await page.getByRole('link', { name: 'cart' }).click();
    await page.getByText('live', { exact: true }).waitFor();
    await stopDev();
    await page.getByText('The Strata API cannot be reached').waitFor({ timeout: LONG });
    await page.getByText('live updates lost, reconnecting').waitFor({ timeout: LONG });
    await shot(page, 'api-down');
    await startDev();
    await page.getByText('The Strata API cannot be reached').waitFor({ state: 'detached', timeout: LONG });
    await page.getByText('live', { exact: true }).waitFor({ timeout: LONG });
    await page.getByRole('heading', { name: /Service\s+cart/ }).waitFor();
  });

  await step('a read-only token sees no write controls', async () => {
    const readOnly = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const reader = await readOnly.newPage();
    await signIn(reader, READER);
    await reader.getByText('read-only').first().waitFor();
    await reader.locator('tr[data-service="cart"]').waitFor();
    if (await reader.getByRole('link', { name: 'Deploy a service' }).count()) throw new Error('a read-only token sees the deploy button');
    await reader.getByRole('link', { name: 'cart' }).click();
    await reader.getByRole('heading', { name: 'Settings' }).waitFor();
    await reader.getByText('Hold timeout').waitFor();
    for (const name of ['Save settings', 'Delete service…']) {
      if (await reader.getByRole('button', { name }).count()) throw new Error(`a read-only token sees "${name}"`);
    }
    await reader.getByRole('link', { name: 'Cluster' }).click();
    await reader.getByTestId('leader').waitFor();
    if (await reader.getByRole('button', { name: /Remove|Add member/ }).count()) throw new Error('a read-only token sees cluster controls');
    await shot(reader, 'read-only');
    await readOnly.close();
  });

  await step('at a phone\'s width every page fits and stays usable', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const small = await phone.newPage();
    await signIn(small, ADMIN);
    await small.locator('tr[data-service="cart"]').waitFor();
    await checkAccessible(small, 'overview (phone)');
    await shot(small, 'phone-overview');
    await small.getByRole('link', { name: 'cart' }).click();
    await small.getByRole('heading', { name: 'Shard map' }).waitFor();
    await checkAccessible(small, 'service (phone)');
    await shot(small, 'phone-service');
    for (const path of ['/entities?service=cart&id=user-1', '/cluster', '/audit', '/schedules', '/deploy']) {
      await small.goto(`${API}/ui${path}`);
      await small.locator('h1').first().waitFor();
      await checkAccessible(small, `${path} (phone)`);
    }
    await phone.close();
  });

  await step('a second control-plane node is added from the cluster page, then removed', async () => {
    const raftPort = await freePort();
    const apiPort2 = await freePort();
    const secret = readFileSync(join(work, 'strata', 'cluster-secret'), 'utf8').trim();
    const { openSync } = await import('node:fs');
    const log = openSync(join(work, 'node-2.log'), 'a');
    second = spawn(
      STRATA,
      [
        'control-plane',
        '--node-id', '2',
        '--data-dir', join(work, 'node-2'),
        '--listen', `127.0.0.1:${raftPort}`,
        '--api-listen', `127.0.0.1:${apiPort2}`,
      ],
      { cwd: work, stdio: ['ignore', log, log], env: { ...process.env, STRATA_CLUSTER_SECRET: secret, STRATA_ADMIN_TOKEN: ADMIN } },
    );
    await until('node 2 answers', async () => (await fetch(`http://127.0.0.1:${apiPort2}/api/v1/cluster`, auth(ADMIN)).catch(() => null))?.ok);
    await page.goto(`${API}/ui/cluster`);
    await page.getByLabel('Node id').fill('2');
    await page.getByLabel('Raft address').fill(`127.0.0.1:${raftPort}`);
    await page.getByLabel('API address').fill(`127.0.0.1:${apiPort2}`);
    await page.getByRole('button', { name: 'Add member' }).click();
    const row = page.locator('tr', { hasText: 'node 2' });
    await row.getByText('voter').waitFor({ timeout: LONG });
    await shot(page, 'cluster-two-nodes');
    await row.getByRole('button', { name: 'Remove…' }).click();
    await page.getByRole('button', { name: 'Remove node 2' }).click();
    await row.waitFor({ state: 'detached', timeout: LONG });
    await page.getByTestId('leader').getByText('node 1').waitFor();
  });
} catch (error) {
  if (page) await shot(page, 'failure').catch(() => {});
  console.log('--- strata dev log (last lines)');
  try {
    console.log(readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n'));
  } catch {
    // no log
  }
} finally {
  await load?.stop().catch(() => {});
  await browser.close().catch(() => {});
  if (second && second.exitCode === null) {
    const exited = new Promise((done) => second.once('exit', done));
    second.kill('SIGTERM');
    await exited;
  }
  await stopDev().catch(() => {});
  if (failed === 0) rmSync(work, { recursive: true, force: true });
  else console.log(`kept ${work} for inspection`);
}

console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
