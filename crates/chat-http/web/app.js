// The chat page: sign-in, the inbox, one open conversation, and the live connection.
// Every text from the server is rendered with text nodes (dom.js), never parsed as HTML.

import { Api, ApiError, devTokensAvailable, mintDevToken, userOfToken } from './api.js';
import { Live } from './live.js';
import { $, h, replaceChildren, timeOf } from './dom.js';

const EMOJI = ['👍', '❤️', '😂', '🎉', '😮'];
const TOKEN_KEY = 'chat.token';
const DEV_KEY = 'chat.dev';

const state = {
  api: null,
  live: null,
  me: null, // { id, name }
  dev: null, // { userId, name } when signed in with a development token
  conversations: new Map(), // id -> conversation (with membership and last_message)
  showArchived: false,
  open: null, // the open conversation's id
  messages: new Map(), // id -> message, of the open conversation
  hasOlder: false,
  loadingOlder: false,
  readSeq: new Map(), // user id -> last_read_seq, in the open conversation
  typing: new Map(), // user id -> timer
  replyTo: null,
  catchingUp: false,
  buffered: [],
  typingSentAt: 0,
  typingStop: null,
};

// ---------------------------------------------------------------------------------------
// Sign-in.

async function init() {
  bindUi();
  const token = sessionStorage.getItem(TOKEN_KEY);
  const dev = sessionStorage.getItem(DEV_KEY);
  if (token) {
    signedIn(token, dev ? JSON.parse(dev) : null);
    return;
  }
  showSignIn();
}

async function showSignIn() {
  $('app').hidden = true;
  $('sign-in').hidden = false;
  $('sign-out').hidden = true;
  $('me').textContent = '';
  $('dev-form').hidden = !(await devTokensAvailable());
  (($('dev-form').hidden ? $('token-input') : $('dev-user'))).focus();
}

function signedIn(token, dev) {
  const who = userOfToken(token);
  if (!who || !Number.isFinite(who.id)) {
    $('sign-in-error').textContent = 'That does not look like a token.';
    showSignIn();
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  if (dev) sessionStorage.setItem(DEV_KEY, JSON.stringify(dev));
  state.api = new Api(token);
  state.me = who;
  state.dev = dev;
  $('sign-in').hidden = true;
  $('app').hidden = false;
  $('sign-out').hidden = false;
  $('me').textContent = `${who.name || 'User'} (#${who.id})`;
  state.live = new Live(freshToken, {
    onEvent: (frame) => (state.catchingUp ? state.buffered.push(frame) : applyEvent(frame)),
    onReady: ({ resumed }) => (resumed ? afterResume() : catchUp()),
    onStatus: showStatus,
    onAuthFailed: (reason) => toast(`Signed out by the server: ${reason || 'token refused'}`),
  });
  // The connection, for the browser tests (its `connections` tell whether a reconnect
  // resumed from a token) and for the console.
  window.chatLive = state.live;
  state.live.start();
  refreshInbox();
}

/** The token for the next connection; after a 1008 close, a new one (development) or sign-out. */
async function freshToken(needFresh) {
  if (!needFresh) return state.api.token;
  if (state.dev) {
    const token = await mintDevToken(state.dev.userId, state.dev.name);
    state.api.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    return token;
  }
  signOut();
  throw new Error('signed out');
}

function signOut() {
  if (state.live) state.live.stop();
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(DEV_KEY);
  state.conversations.clear();
  closeConversation();
  replaceChildren($('inbox'));
  showStatus('');
  showSignIn();
}

function showStatus(status) {
  const el = $('status');
  el.dataset.state = status;
  el.textContent = {
    online: 'online', connecting: 'connecting…', reconnecting: 'reconnecting…', offline: 'offline',
  }[status] || '';
}

let toastTimer;
function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

/** Runs an action, showing its failure. */
async function attempt(action) {
  try {
    return await action();
  } catch (err) {
    toast(err instanceof ApiError ? `${err.message} (${err.code || err.status})` : String(err.message || err));
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Catching up (docs/websocket.md §6). A connection that resumed from the sync token has
// already replayed every change missed (messages, edits, deletes, reactions, read markers,
// membership, renames) through applyEvent, like live events: only what the feed does not
// carry is re-read. A connection that did not resume (first start, a token the server could
// not resume from) reloads what is shown, holding events back until it is loaded.

async function catchUp() {
  state.catchingUp = true;
  try {
    if (!await refreshInbox()) throw new Error('the inbox could not be read');
    if (state.open) await reloadShown();
  } catch (err) {
    // The token now points past what the page shows: forget it, so that the next
    // connection reloads instead of resuming on top of a stale page.
    if (state.live) state.live.syncToken = null;
    toast(`Catching up failed: ${err.message}`);
  } finally {
    state.catchingUp = false;
    const buffered = state.buffered.splice(0);
    buffered.forEach(applyEvent);
  }
}

/** Reloads the inbox; answers whether it could. */
async function refreshInbox() {
  const items = await attempt(() => state.api.inbox(state.showArchived));
  if (!items) return false;
  state.conversations = new Map(items.map((c) => [c.id, c]));
  if (state.open && !state.conversations.has(state.open)) {
    const conv = await state.api.conversation(state.open).catch(() => null);
    if (conv) state.conversations.set(conv.id, conv); else closeConversation();
  }
  renderInbox();
  if (state.open) renderHeader();
  return true;
}

/**
 * After a resume: the feed does not carry mute, a per-user setting that is not announced
 * live either, so a change made on another device is read here.
 */
async function afterResume() {
  const items = await state.api.inbox(state.showArchived).catch(() => null);
  if (!items) return;
  for (const fresh of items) {
    const conv = state.conversations.get(fresh.id);
    if (conv) conv.membership.is_muted = fresh.membership.is_muted;
  }
  renderInbox();
  if (state.open) renderHeader();
}

/** Re-reads every message from the oldest shown one to the newest (in `seq` order). */
async function reloadShown() {
  const id = state.open;
  const seqs = [...state.messages.values()].map((m) => m.seq);
  if (seqs.length === 0) {
    await loadLatest(id);
    return;
  }
  const fresh = new Map();
  let after = Math.min(...seqs) - 1;
  for (let i = 0; i < 50; i += 1) {
    const page = await state.api.history(id, { after_seq: after, limit: 100 });
    for (const m of page.items) fresh.set(m.id, m);
    if (!page.has_more || page.items.length === 0) break;
    after = page.items[page.items.length - 1].seq;
  }
  if (state.open !== id) return;
  state.messages = fresh;
  renderMessages({ keepBottom: true });
  await loadReceipts();
  markReadSoon();
}

// ---------------------------------------------------------------------------------------
// Events.

function applyEvent(frame) {
  const conv = frame.conversation_id || (frame.message && frame.message.conversation_id)
    || (frame.conversation && frame.conversation.id);
  switch (frame.type) {
    case 'message.created': return onMessage(frame.message, true);
    case 'message.updated': return onMessage(frame.message, false);
    case 'message.deleted':
      if (conv === state.open && state.messages.delete(frame.message_id)) renderMessages({});
      return refreshConversation(conv);
    case 'reaction.added':
    case 'reaction.removed':
      return onReaction(frame);
    case 'conversation.read':
      if (frame.user_id === state.me.id) return refreshConversation(conv);
      if (conv === state.open) {
        state.readSeq.set(frame.user_id, Math.max(state.readSeq.get(frame.user_id) || 0, frame.last_read_seq));
        renderSeen();
      }
      return undefined;
    case 'typing': return onTyping(frame);
    case 'participant.removed':
      if (frame.user_id === state.me.id) {
        state.conversations.delete(conv);
        if (conv === state.open) closeConversation();
        renderInbox();
        return undefined;
      }
      return refreshConversation(conv);
    case 'conversation.created':
    case 'conversation.updated':
    case 'participant.added':
    case 'participant.updated':
      return refreshConversation(conv);
    case 'error':
      toast(frame.error ? frame.error.detail || frame.error.title : 'error');
      return undefined;
    default:
      return undefined; // new event types are ignorable
  }
}

// Conversations being re-read, each with whether an event came after its read began.
const refreshing = new Map();

/**
 * Re-reads a conversation (an event's frame lacks the per-user fields). A replay can bring
 * many events of one conversation at once: while a read is in flight, later events ask for
 * one more read after it rather than one each.
 */
async function refreshConversation(id) {
  if (!id) return;
  const pending = refreshing.get(id);
  if (pending) {
    pending.again = true;
    return;
  }
  const entry = { again: true };
  refreshing.set(id, entry);
  try {
    while (entry.again) {
      entry.again = false;
      await readConversation(id);
    }
  } finally {
    refreshing.delete(id);
  }
}

async function readConversation(id) {
  const conv = await state.api.conversation(id).catch(() => null);
  if (!conv) {
    state.conversations.delete(id);
    if (id === state.open) closeConversation();
  } else if (!conv.is_archived || state.showArchived || id === state.open) {
    state.conversations.set(id, conv);
  } else {
    state.conversations.delete(id);
  }
  renderInbox();
  if (id === state.open) renderHeader();
}

function onMessage(message, created) {
  const conv = state.conversations.get(message.conversation_id);
  if (!conv) {
    refreshConversation(message.conversation_id);
  } else if (created) {
    const last = conv.last_message;
    if (!last || last.seq <= message.seq) {
      conv.last_message = message;
      conv.last_message_at = message.created_at;
    }
    const seen = message.conversation_id === state.open && visible();
    if (message.sender_id === state.me.id) {
      // A send moves its sender's marker to it, with no conversation.read of its own.
      conv.membership.unread_count = 0;
      conv.membership.last_read_seq = Math.max(conv.membership.last_read_seq || 0, message.seq);
    } else if (!seen && !(last && last.seq >= message.seq)) {
      // A conversation read after this message was sent (a replay's events are all
      // committed before they arrive) already counts it.
      conv.membership.unread_count += 1;
    }
    renderInbox();
  } else if (conv.last_message && conv.last_message.id === message.id) {
    conv.last_message = message;
    renderInbox();
  }
  if (message.conversation_id !== state.open) return;
  if (created) {
    // A message.created from X at seq N means X's marker is at least N (websocket.md §3).
    state.readSeq.set(message.sender_id, Math.max(state.readSeq.get(message.sender_id) || 0, message.seq));
  }
  const known = state.messages.get(message.id);
  if (!created && !known) return; // an edit of a message not shown
  state.messages.set(message.id, message); // keyed by id: a repeated event changes nothing
  if (created && message.sender_id !== state.me.id) clearTyping(message.sender_id);
  renderMessages({ keepBottom: created });
  if (created) markReadSoon();
}

function onReaction(frame) {
  if (frame.conversation_id !== state.open) return;
  const message = state.messages.get(frame.message_id);
  if (!message) return;
  const added = frame.type === 'reaction.added';
  let reaction = message.reactions.find((r) => r.emoji === frame.emoji);
  if (!reaction) {
    if (!added) return;
    reaction = { emoji: frame.emoji, count: 0, user_ids: [] };
    message.reactions.push(reaction);
  }
  const has = reaction.user_ids.includes(frame.user_id);
  if (added && !has) reaction.user_ids.push(frame.user_id);
  if (!added && has) reaction.user_ids = reaction.user_ids.filter((u) => u !== frame.user_id);
  reaction.count = reaction.user_ids.length;
  message.reactions = message.reactions.filter((r) => r.count > 0);
  renderMessages({});
}

function onTyping(frame) {
  if (frame.conversation_id !== state.open || frame.user_id === state.me.id) return;
  clearTimeout(state.typing.get(frame.user_id));
  if (frame.is_typing) {
    // A lost "stopped typing" must not leave the indicator on forever.
    state.typing.set(frame.user_id, setTimeout(() => clearTyping(frame.user_id), 6000));
  } else {
    state.typing.delete(frame.user_id);
  }
  renderTyping();
}

function clearTyping(userId) {
  clearTimeout(state.typing.get(userId));
  if (state.typing.delete(userId)) renderTyping();
}

// ---------------------------------------------------------------------------------------
// Names.

function nameOf(userId, conv = state.conversations.get(state.open)) {
  if (userId === state.me.id) return 'You';
  const p = conv && conv.participants.find((x) => x.user_id === userId);
  return (p && p.display_name) || `User ${userId}`;
}

function titleOf(conv) {
  if (conv.name) return conv.name;
  const others = conv.participants.filter((p) => p.user_id !== state.me.id);
  if (others.length === 0) return 'Just you';
  return others.map((p) => p.display_name || `User ${p.user_id}`).join(', ');
}

// ---------------------------------------------------------------------------------------
// The inbox.

function activity(conv) {
  return Date.parse(conv.last_message_at || conv.created_at) || 0;
}

function renderInbox() {
  const list = [...state.conversations.values()].sort((a, b) => activity(b) - activity(a));
  replaceChildren($('inbox'), list.map((conv) => {
    const unread = conv.membership.unread_count;
    const last = conv.last_message;
    const preview = last ? `${last.is_system_message ? '' : `${nameOf(last.sender_id, conv)}: `}${last.content}` : 'No messages yet';
    return h('li', {},
      h('button', {
        type: 'button',
        class: `inbox-item${conv.id === state.open ? ' active' : ''}${unread ? ' unread' : ''}`,
        dataset: { id: conv.id },
        'aria-current': conv.id === state.open ? 'true' : null,
        onclick: () => openConversation(conv.id),
      },
      h('span', { class: 'inbox-title' }, titleOf(conv),
        conv.membership.is_muted ? h('span', { class: 'tag', title: 'Muted' }, '🔕') : null,
        conv.is_archived ? h('span', { class: 'tag' }, 'archived') : null),
      h('span', { class: 'inbox-time' }, timeOf(conv.last_message_at)),
      h('span', { class: 'inbox-preview' }, preview),
      unread ? h('span', { class: 'badge', 'aria-label': `${unread} unread` }, String(unread)) : null));
  }));
}

// ---------------------------------------------------------------------------------------
// The open conversation.

async function openConversation(id) {
  if (state.open !== id) {
    state.open = id;
    state.messages = new Map();
    state.readSeq = new Map();
    state.typing.forEach((t) => clearTimeout(t));
    state.typing = new Map();
    setReply(null);
  }
  $('empty').hidden = true;
  $('conv').hidden = false;
  document.body.classList.add('in-conversation');
  renderHeader();
  renderInbox();
  renderTyping();
  await attempt(() => loadLatest(id));
  $('text').focus();
}

function closeConversation() {
  state.open = null;
  state.messages = new Map();
  $('conv').hidden = true;
  $('empty').hidden = false;
  document.body.classList.remove('in-conversation');
}

async function loadLatest(id) {
  const page = await state.api.history(id, { limit: 50 });
  if (state.open !== id) return;
  for (const m of page.items) state.messages.set(m.id, m);
  state.hasOlder = page.has_more;
  renderMessages({ toBottom: true });
  await loadReceipts();
  markReadSoon();
  // A short first page leaves nothing to scroll: keep loading until it can scroll.
  fillUpward();
}

async function loadOlder() {
  if (!state.hasOlder || state.loadingOlder || !state.open) return;
  const id = state.open;
  const seqs = [...state.messages.values()].map((m) => m.seq);
  if (seqs.length === 0) return;
  state.loadingOlder = true;
  try {
    const page = await state.api.history(id, { before_seq: Math.min(...seqs), limit: 50 });
    if (state.open !== id) return;
    const list = $('messages');
    const fromBottom = list.scrollHeight - list.scrollTop;
    for (const m of page.items) state.messages.set(m.id, m);
    state.hasOlder = page.has_more;
    renderMessages({});
    list.scrollTop = list.scrollHeight - fromBottom; // the reader stays where they were
  } finally {
    state.loadingOlder = false;
  }
}

async function fillUpward() {
  const list = $('messages');
  for (let i = 0; i < 10 && state.hasOlder && list.scrollHeight <= list.clientHeight; i += 1) {
    await loadOlder();
  }
}

/** The receipts of my newest message tell who has read up to it. */
async function loadReceipts() {
  const mine = sorted().filter((m) => m.sender_id === state.me.id && !m.is_system_message);
  const last = mine[mine.length - 1];
  if (!last) { renderSeen(); return; }
  const receipts = await state.api.receipts(last.id).catch(() => []);
  for (const r of receipts) {
    if (r.user_id !== state.me.id) {
      state.readSeq.set(r.user_id, Math.max(state.readSeq.get(r.user_id) || 0, last.seq));
    }
  }
  renderSeen();
}

function renderHeader() {
  const conv = state.conversations.get(state.open);
  if (!conv) return;
  $('conv-title').textContent = titleOf(conv);
  $('mute').textContent = conv.membership.is_muted ? 'Unmute' : 'Mute';
  $('mute').setAttribute('aria-pressed', String(conv.membership.is_muted));
  const admin = conv.membership.role === 'ADMIN';
  $('archive').textContent = conv.is_archived ? 'Unarchive' : 'Archive';
  $('archive').hidden = !admin && conv.type !== 'DIRECT';
  const group = conv.type !== 'DIRECT';
  $('members-toggle').hidden = !group;
  if (!group) $('members').hidden = true;
  $('add-member-form').hidden = !admin;
  replaceChildren($('member-list'), conv.participants.map((p) => h('li', {},
    h('span', {}, p.display_name || `User ${p.user_id}`, ` #${p.user_id}`),
    p.role === 'ADMIN' ? h('span', { class: 'tag' }, 'admin') : null,
    admin && p.user_id !== state.me.id
      ? h('button', { type: 'button', class: 'small', onclick: () => attempt(() => state.api.removeMember(conv.id, p.user_id)).then(() => refreshConversation(conv.id)) }, 'Remove')
      : null)));
}

function sorted() {
  return [...state.messages.values()].sort((a, b) => a.seq - b.seq);
}

function renderMessages({ toBottom = false, keepBottom = false }) {
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  const focusedId = document.activeElement && document.activeElement.closest
    && document.activeElement.closest('.msg') && document.activeElement.closest('.msg').dataset.id;
  const focusedAction = document.activeElement && document.activeElement.dataset.action;
  const messages = sorted();
  replaceChildren(list,
    state.hasOlder ? h('li', { class: 'older' }, 'Scroll up for older messages') : null,
    messages.map(renderMessage));
  renderSeen();
  if (toBottom || (keepBottom && atBottom)) list.scrollTop = list.scrollHeight;
  if (focusedId) {
    const again = list.querySelector(`.msg[data-id="${CSS.escape(focusedId)}"] [data-action="${CSS.escape(focusedAction || '')}"]`);
    if (again) again.focus();
  }
}

function renderMessage(m) {
  if (m.is_system_message) {
    return h('li', { class: 'msg system', dataset: { id: m.id, seq: m.seq } }, h('span', { class: 'text' }, m.content));
  }
  const mine = m.sender_id === state.me.id;
  const quoted = m.reply_to_id ? state.messages.get(m.reply_to_id) : null;
  return h('li', { class: `msg${mine ? ' mine' : ''}`, dataset: { id: m.id, seq: m.seq } },
    h('div', { class: 'meta' },
      h('span', { class: 'sender' }, mine ? 'You' : (m.sender_name || nameOf(m.sender_id))),
      h('time', { datetime: m.created_at }, timeOf(m.created_at)),
      m.edited_at ? h('span', { class: 'edited' }, '(edited)') : null),
    m.reply_to_id ? h('blockquote', { class: 'quote' },
      quoted ? `${quoted.sender_name || nameOf(quoted.sender_id)}: ${quoted.content}` : 'a reply to an earlier message') : null,
    h('p', { class: 'text' }, m.content),
    h('div', { class: 'reactions' }, m.reactions.map((r) => h('button', {
      type: 'button',
      class: 'reaction',
      dataset: { action: `reaction-${r.emoji}`, emoji: r.emoji },
      'aria-pressed': String(r.user_ids.includes(state.me.id)),
      title: r.user_ids.map((u) => nameOf(u)).join(', '),
      onclick: () => toggleReaction(m, r.emoji),
    }, `${r.emoji} ${r.count}`))),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'small', dataset: { action: 'reply' }, onclick: () => setReply(m) }, 'Reply'),
      EMOJI.map((e) => h('button', {
        type: 'button', class: 'small emoji', dataset: { action: `react-${e}`, emoji: e },
        'aria-label': `React ${e}`, onclick: () => toggleReaction(m, e),
      }, e)),
      mine ? h('button', { type: 'button', class: 'small', dataset: { action: 'edit' }, onclick: () => startEdit(m) }, 'Edit') : null,
      mine ? h('button', { type: 'button', class: 'small danger', dataset: { action: 'delete' }, onclick: () => deleteMessage(m) }, 'Delete') : null),
    mine ? h('p', { class: 'seen' }) : null);
}

/** "Seen by" under my newest message that someone else has read. */
function renderSeen() {
  const list = $('messages');
  list.querySelectorAll('.seen').forEach((el) => { el.textContent = ''; });
  const mine = sorted().filter((m) => m.sender_id === state.me.id && !m.is_system_message);
  for (let i = mine.length - 1; i >= 0; i -= 1) {
    const m = mine[i];
    const readers = [...state.readSeq.entries()]
      .filter(([u, seq]) => u !== state.me.id && seq >= m.seq).map(([u]) => nameOf(u));
    if (readers.length) {
      const el = list.querySelector(`.msg[data-id="${CSS.escape(m.id)}"] .seen`);
      if (el) el.textContent = `Seen by ${readers.join(', ')}`;
      return;
    }
  }
}

function renderTyping() {
  const names = [...state.typing.keys()].map((u) => nameOf(u));
  $('typing').textContent = names.length === 0 ? ''
    : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
}

// ---------------------------------------------------------------------------------------
// Actions.

function visible() {
  return document.visibilityState === 'visible';
}

let readTimer;
/** Marks the open conversation read once it is visible (and something is unread). */
function markReadSoon() {
  clearTimeout(readTimer);
  readTimer = setTimeout(async () => {
    const conv = state.conversations.get(state.open);
    if (!conv || !visible()) return;
    const newest = sorted().pop();
    if (conv.membership.unread_count === 0 && newest && newest.seq <= conv.membership.last_read_seq) return;
    const read = await attempt(() => state.api.markRead(conv.id));
    if (read) {
      conv.membership.unread_count = read.unread_count;
      conv.membership.last_read_seq = read.last_read_seq;
      renderInbox();
    }
  }, 300);
}

async function send() {
  const input = $('text');
  const content = input.value.trim();
  if (!content || !state.open) return;
  const id = state.open;
  const replyTo = state.replyTo;
  input.value = '';
  setReply(null);
  stopTyping();
  const message = await attempt(() => state.api.send(id, content, replyTo && replyTo.id, crypto.randomUUID()));
  if (!message) {
    input.value = content;
    return;
  }
  onMessage(message, true);
}

function setReply(message) {
  state.replyTo = message;
  $('replying').hidden = !message;
  $('replying-text').textContent = message ? `Replying to ${message.sender_name || nameOf(message.sender_id)}: ${message.content}` : '';
  if (message) $('text').focus();
}

async function toggleReaction(message, emoji) {
  const mine = message.reactions.some((r) => r.emoji === emoji && r.user_ids.includes(state.me.id));
  const out = await attempt(() => (mine ? state.api.unreact(message.id, emoji) : state.api.react(message.id, emoji)));
  const shown = state.messages.get(message.id);
  if (out && shown) {
    shown.reactions = out.reactions;
    renderMessages({});
  }
}

function startEdit(message) {
  const item = $('messages').querySelector(`.msg[data-id="${CSS.escape(message.id)}"]`);
  if (!item) return;
  const text = item.querySelector('.text');
  const input = h('textarea', { class: 'edit-input', rows: 2, 'aria-label': 'Edit message' });
  input.value = message.content;
  const save = async () => {
    const content = input.value.trim();
    if (content && content !== message.content) {
      const updated = await attempt(() => state.api.edit(message.id, content));
      if (updated) onMessage(updated, false);
    } else {
      renderMessages({});
    }
  };
  const form = h('form', { class: 'edit', onsubmit: (e) => { e.preventDefault(); save(); } },
    input,
    h('button', { type: 'submit', class: 'small' }, 'Save'),
    h('button', { type: 'button', class: 'small', onclick: () => renderMessages({}) }, 'Cancel'));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); save(); }
    if (e.key === 'Escape') renderMessages({});
  });
  text.replaceWith(form);
  input.focus();
}

async function deleteMessage(message) {
  if (!window.confirm('Delete this message?')) return;
  const done = await attempt(() => state.api.remove(message.id).then(() => true));
  if (done && state.messages.delete(message.id)) renderMessages({});
}

function typed() {
  if (!state.open || !state.live) return;
  const now = Date.now();
  if (now - state.typingSentAt > 3000) {
    state.typingSentAt = now;
    state.live.send({ type: 'typing', conversation_id: state.open, is_typing: true });
  }
  clearTimeout(state.typingStop);
  state.typingStop = setTimeout(stopTyping, 4000);
}

function stopTyping() {
  clearTimeout(state.typingStop);
  if (state.typingSentAt && state.open && state.live) {
    state.live.send({ type: 'typing', conversation_id: state.open, is_typing: false });
  }
  state.typingSentAt = 0;
}

const ids = (text) => text.split(/[\s,]+/).filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0);

function bindUi() {
  $('dev-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const userId = Number($('dev-user').value);
    const name = $('dev-name').value.trim() || null;
    try {
      const token = await mintDevToken(userId, name);
      $('sign-in-error').textContent = '';
      signedIn(token, { userId, name });
    } catch (err) {
      $('sign-in-error').textContent = err.message;
    }
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signedIn($('token-input').value.trim(), null);
  });
  $('sign-out').addEventListener('click', signOut);
  $('show-archived').addEventListener('change', (e) => {
    state.showArchived = e.target.checked;
    refreshInbox();
  });
  $('direct-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const conv = await attempt(() => state.api.openDirect(Number($('direct-user').value)));
    if (conv) {
      $('direct-user').value = '';
      state.conversations.set(conv.id, conv);
      openConversation(conv.id);
    }
  });
  $('group-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const conv = await attempt(() => state.api.createGroup($('group-name').value.trim(), ids($('group-members').value)));
    if (conv) {
      $('group-name').value = '';
      $('group-members').value = '';
      state.conversations.set(conv.id, conv);
      openConversation(conv.id);
    }
  });
  $('add-member-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const id = state.open;
    const done = await attempt(() => state.api.addMembers(id, ids($('add-member').value)));
    if (done !== undefined) {
      $('add-member').value = '';
      refreshConversation(id);
    }
  });
  $('members-toggle').addEventListener('click', () => {
    const panel = $('members');
    panel.hidden = !panel.hidden;
    $('members-toggle').setAttribute('aria-expanded', String(!panel.hidden));
  });
  $('mute').addEventListener('click', async () => {
    const conv = state.conversations.get(state.open);
    if (conv && await attempt(() => state.api.setMuted(conv.id, !conv.membership.is_muted)) !== undefined) refreshConversation(conv.id);
  });
  $('archive').addEventListener('click', async () => {
    const conv = state.conversations.get(state.open);
    if (conv && await attempt(() => state.api.setArchived(conv.id, !conv.is_archived)) !== undefined) refreshConversation(conv.id);
  });
  $('back').addEventListener('click', () => { closeConversation(); renderInbox(); });
  $('cancel-reply').addEventListener('click', () => setReply(null));
  $('composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
  $('text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    if (e.key === 'Escape') setReply(null);
  });
  $('text').addEventListener('input', typed);
  $('messages').addEventListener('scroll', () => {
    if ($('messages').scrollTop < 80) loadOlder();
  });
  document.addEventListener('visibilitychange', () => { if (visible() && state.open) markReadSoon(); });
}

init();
