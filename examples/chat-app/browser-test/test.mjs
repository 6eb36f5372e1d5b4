// Browser test of the chat example: two headless Chromium pages join one room and chat.
//
//   CHAT_URL       page to open (default http://127.0.0.1:8000/, i.e. wasp from run.sh)
//   EXPECT_REDACT  1 (default): a message with "darn" must arrive as "***" (wasp's redact
//                  filter); 0 when the proxy in front does not filter (e.g. plain nginx)
//   ARTIFACTS_DIR  where chat.png goes (default: artifacts/ beside this file)
//   CHROMIUM       browser binary (default /usr/bin/chromium; apt-get install -y chromium)
//   CHROMIUM_ARGS  extra command-line flags, space-separated (e.g. the test CA's
//                  --ignore-certificate-errors-spki-list=HASH for https://)
//   EXPECT_H2      1: the page must come over HTTP/2 and, per wasp's metrics at METRICS_URL
//                  (its admin /metrics), the chat's WebSocket over the page's connection (default 0)
//   EXPECT_DEFLATE 1 (default): the chat's WebSocket must negotiate permessage-deflate with
//                  wasp (read from Chromium's DevTools protocol); 0 for another proxy
//
// Exits 0 when every step passed, 1 with a message saying which step failed.

import { chromium } from 'playwright-core';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHAT_URL = process.env.CHAT_URL || 'http://127.0.0.1:8000/';
const EXPECT_REDACT = (process.env.EXPECT_REDACT ?? '1') !== '0';
const EXPECT_DEFLATE = (process.env.EXPECT_DEFLATE ?? '1') !== '0';
const EXPECT_H2 = process.env.EXPECT_H2 === '1';
const METRICS_URL = process.env.METRICS_URL || 'http://127.0.0.1:8001/metrics';
const CHROMIUM_ARGS = (process.env.CHROMIUM_ARGS || '').split(' ').filter(Boolean);
const ARTIFACTS_DIR = process.env.ARTIFACTS_DIR || path.join(here, 'artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = 10_000;

let current = 'starting';
const step = (name) => {
  current = name;
  console.log(`• ${name}`);
};

async function joinRoom(page, nick, room) {
  await page.goto(CHAT_URL);
  await page.locator('#status[data-state="connected"]').waitFor();
  await page.fill('#nick', nick);
  await page.fill('#room', room);
  await page.click('#join-form button[type="submit"]');
  await page.locator('#chat-view').waitFor({ state: 'visible' });
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#say-form button[type="submit"]');
}

async function expectMessage(page, nick, text) {
  const line = page.locator('#messages li .line', { has: page.locator('.who b', { hasText: nick }) })
    .filter({ has: page.locator('.text', { hasText: text }) });
  await line.last().waitFor();
}

async function expectMembers(page, members) {
  await page.waitForFunction(
    (want) => [...document.querySelectorAll('#members li')].map((li) => li.textContent).join(',') === want,
    members.join(','),
    { timeout: TIMEOUT_MS },
  );
}

async function main() {
  const room = `test-${Date.now().toString(36)}`;
  step(`launching ${CHROMIUM}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      ...CHROMIUM_ARGS,
    ],
  });
  try {
    const ann = await browser.newPage({ viewport: { width: 960, height: 640 } });
    const bob = await browser.newPage({ viewport: { width: 960, height: 640 } });
    for (const page of [ann, bob]) {
      page.setDefaultTimeout(TIMEOUT_MS);
      page.on('pageerror', (err) => console.error(`  page error: ${err.message}`));
    }

    // The WebSocket handshake's answer as Chromium got it (DevTools protocol).
    const extensions = [];
    const cdp = await ann.context().newCDPSession(ann);
    await cdp.send('Network.enable');
    cdp.on('Network.webSocketHandshakeResponseReceived', ({ response }) => {
      const headers = Object.fromEntries(
        Object.entries(response.headers).map(([name, value]) => [name.toLowerCase(), value]));
      extensions.push(headers['sec-websocket-extensions'] ?? '');
    });

    step(`ann joins #${room} at ${CHAT_URL}`);
    await joinRoom(ann, 'ann', room);
    if (EXPECT_H2) {
      step('the page came over HTTP/2');
      const protocol = await ann.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
      if (protocol !== 'h2') throw new Error(`the page came over ${protocol}`);
      step('ann\'s WebSocket went over that connection (RFC 8441): one connection in all, one WebSocket');
      const metrics = await (await fetch(METRICS_URL)).text();
      const sample = (series, label = '') => metrics.split('\n')
        .filter((line) => line.startsWith(series) && line.includes(label))
        .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
      const connections = sample('wasp_client_connections_by_protocol_total{');
      const h2 = sample('wasp_client_connections_by_protocol_total{', 'protocol="h2"');
      const websockets = sample('wasp_websockets{location="/ws/"}');
      if (connections !== 1 || h2 !== 1 || websockets !== 1) {
        throw new Error(`connections ${connections} (h2: ${h2}), open WebSockets ${websockets}: want 1, 1, 1`);
      }
    }
    if (EXPECT_DEFLATE) {
      step('ann\'s WebSocket negotiated permessage-deflate with wasp (EXPECT_DEFLATE=0 skips this)');
      const want = 'permessage-deflate; client_no_context_takeover';
      if (extensions.length === 0 || !extensions.every((value) => value === want)) {
        throw new Error(`Sec-WebSocket-Extensions answered: ${JSON.stringify(extensions)}, want ${want}`);
      }
    }
    await expectMembers(ann, ['ann']);

    step('bob joins the same room; both see both members');
    await joinRoom(bob, 'bob', room);
    await expectMembers(bob, ['ann', 'bob']);
    await expectMembers(ann, ['ann', 'bob']);

    step("bob sees ann's message");
    await say(ann, 'hello from ann');
    await expectMessage(bob, 'ann', 'hello from ann');

    step("ann sees bob's message");
    await say(bob, 'hi ann, bob here');
    await expectMessage(ann, 'bob', 'hi ann, bob here');

    if (EXPECT_REDACT) {
      step('"darn" arrives redacted as "***" (needs wasp\'s redact filter; EXPECT_REDACT=0 skips this)');
      await say(ann, 'well darn it');
      await expectMessage(bob, 'ann', 'well *** it');
      const texts = await bob.locator('#messages .text').allTextContents();
      if (texts.some((t) => /darn/i.test(t))) throw new Error(`unredacted text reached bob: ${JSON.stringify(texts)}`);
    } else {
      console.log('  (EXPECT_REDACT=0: redaction not checked)');
    }

    step(`screenshot to ${path.join(ARTIFACTS_DIR, 'chat.png')}`);
    await mkdir(ARTIFACTS_DIR, { recursive: true });
    await bob.screenshot({ path: path.join(ARTIFACTS_DIR, 'chat.png') });
  } catch (err) {
    await mkdir(ARTIFACTS_DIR, { recursive: true });
    for (const page of browser.contexts().flatMap((c) => c.pages()).slice(-1)) {
      await page.screenshot({ path: path.join(ARTIFACTS_DIR, 'chat-failure.png') }).catch(() => {});
    }
    throw err;
  } finally {
    await browser.close();
  }
}

try {
  await main();
  console.log('browser test passed');
} catch (err) {
  console.error(`browser test FAILED at step "${current}": ${err.message}`);
  process.exit(1);
}
