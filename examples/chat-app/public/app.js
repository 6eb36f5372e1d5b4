// wasp chat: the browser side of the JSON protocol spoken on /ws/chat.
// The socket reconnects with exponential backoff and rejoins the room it was in.
'use strict';

const ENDPOINT = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/chat`;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30000;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'), statusText: $('status-text'), notice: $('notice'),
  joinView: $('join-view'), joinForm: $('join-form'), nick: $('nick'), room: $('room'),
  chatView: $('chat-view'), roomName: $('room-name'), backend: $('backend'),
  members: $('members'), memberCount: $('member-count'), leave: $('leave'),
  messages: $('messages'), sayForm: $('say-form'), text: $('text'),
};

const state = {
  socket: null,
  wanted: null,      // { room, nick } the user asked for; rejoined after a reconnect
  joined: null,      // { room, nick } confirmed by the server
  attempt: 0,        // reconnects since the last successful open
  retryTimer: null,
  countdownTimer: null,
};

// ---- connection -----------------------------------------------------------

function connect() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdownTimer);
  if (state.socket && state.socket.readyState <= WebSocket.OPEN) return;
  setStatus('connecting', state.attempt ? `Reconnecting (attempt ${state.attempt + 1})…` : 'Connecting…');

  const socket = new WebSocket(ENDPOINT);
  state.socket = socket;
  socket.addEventListener('open', () => {
    state.attempt = 0;
    setStatus('connected', 'Connected');
    if (state.wanted) send({ type: 'join', ...state.wanted });
  });
  socket.addEventListener('message', (event) => {
    let msg;
    try { msg = JSON.parse(event.data); } catch { return; }
    handle(msg);
  });
  socket.addEventListener('close', () => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (state.joined) system('Connection lost.');
    state.joined = null;
    ui.sayForm.querySelector('button').disabled = true;
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  // 0.5 s, 1 s, 2 s, … up to 30 s, with jitter so a restarted server is not stampeded.
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempt);
  const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
  state.attempt += 1;
  const due = Date.now() + delay;
  const tick = () => {
    const seconds = Math.max(0, Math.ceil((due - Date.now()) / 1000));
    setStatus('reconnecting', `Disconnected, retrying in ${seconds}s`);
  };
  tick();
  state.countdownTimer = setInterval(tick, 250);
  state.retryTimer = setTimeout(connect, delay);
}

function send(msg) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(msg));
    return true;
  }
  showNotice('Not connected; your request will be sent once the connection is back.');
  return false;
}

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.statusText.textContent = text;
}

// ---- server messages --------------------------------------------------------

function handle(msg) {
  switch (msg.type) {
    case 'joined':
      state.joined = { room: msg.room, nick: msg.nick };
      hideNotice();
      showChat(msg);
      system(`You joined #${msg.room} as ${msg.nick}.`);
      break;
    case 'presence':
      if (state.joined && msg.nick === state.joined.nick && msg.event === 'leave') {
        state.joined = null;
        showJoin();
        break;
      }
      renderMembers(msg.members);
      system(`${msg.nick} ${msg.event === 'join' ? 'joined' : 'left'}.`);
      break;
    case 'message':
      addMessage(msg);
      break;
    case 'error':
      showNotice(msg.reason);
      // A refused (re)join: let the user pick another nickname or room.
      if (!state.joined) {
        state.wanted = null;
        showJoin();
      }
      break;
  }
}

// ---- rendering --------------------------------------------------------------

function showChat({ room, backend, members }) {
  ui.joinView.hidden = true;
  ui.chatView.hidden = false;
  ui.roomName.textContent = room;
  ui.backend.textContent = backend;
  ui.sayForm.querySelector('button').disabled = false;
  renderMembers(members);
  ui.text.focus();
}

function showJoin() {
  ui.chatView.hidden = true;
  ui.joinView.hidden = false;
  ui.messages.replaceChildren();
  ui.nick.focus();
}

function renderMembers(members) {
  const me = state.joined && state.joined.nick;
  ui.members.replaceChildren(...members.map((nick) => {
    const li = document.createElement('li');
    li.textContent = nick;
    if (nick === me) li.className = 'me';
    return li;
  }));
  ui.memberCount.textContent = `(${members.length})`;
}

function addMessage({ nick, text, ts }) {
  const li = document.createElement('li');
  if (state.joined && nick === state.joined.nick) li.className = 'mine';
  const line = el('div', 'line');
  const who = el('div', 'who');
  who.append(el('b', '', nick), ` · ${new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`);
  line.append(who, el('div', 'text', text));
  li.append(line);
  append(li);
}

function system(text) {
  append(el('li', 'system', text));
}

function append(li) {
  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
}

function hideNotice() {
  ui.notice.hidden = true;
}

// ---- user actions -------------------------------------------------------------

ui.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  state.wanted = { room: ui.room.value.trim(), nick: ui.nick.value.trim() };
  localStorage.setItem('wasp-chat', JSON.stringify(state.wanted));
  hideNotice();
  if (!send({ type: 'join', ...state.wanted })) connect();
});

ui.sayForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.text.value;
  if (!text.trim()) return;
  if (send({ type: 'say', text })) ui.text.value = '';
});

ui.leave.addEventListener('click', () => {
  state.wanted = null;
  if (!send({ type: 'leave' })) showJoin();
});

ui.status.addEventListener('click', () => {
  if (!state.socket) connect();
});
window.addEventListener('online', () => {
  if (!state.socket) connect();
});

// ---- start ----------------------------------------------------------------------

try {
  const saved = JSON.parse(localStorage.getItem('wasp-chat') || 'null');
  if (saved) {
    ui.nick.value = saved.nick || '';
    ui.room.value = saved.room || 'lobby';
  }
} catch { /* ignore a corrupt entry */ }
connect();
