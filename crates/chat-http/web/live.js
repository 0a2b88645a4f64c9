// The WebSocket connection (docs/websocket.md): authenticates with its first frame,
// keeps the sync token current, resumes from it after a drop (the server replays what was
// missed before `ready`, §6), hands every event to `onEvent` once, and reconnects with
// exponential back-off and jitter. After every `ready` it calls `onReady` with whether the
// connection resumed; when it did not (first start, expired token), the page reloads.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;
/** Positions remembered above the floor, as the server's own de-duplication (ws/dedup.rs). */
const RECENT_POSITIONS = 4096;
/** Connections remembered in `connections`. */
const KEPT_CONNECTIONS = 20;

/** The position a sync token names (its last part, §6), or null. */
export function positionOf(token) {
  const match = /\.(\d+)$/.exec(token || '');
  return match ? Number(match[1]) : null;
}

/** The token after an event at `pos`: the token with its last part replaced (§6). */
function tokenAt(token, pos) {
  return `${token.slice(0, token.lastIndexOf('.'))}.${pos}`;
}

export class Live {
  /**
   * @param {() => Promise<string>} getToken  a valid token (fresh after a 1008 close)
   * @param {{onEvent: Function, onReady: Function, onStatus: Function, onAuthFailed: Function}} handlers
   */
  constructor(getToken, handlers) {
    this.getToken = getToken;
    this.handlers = handlers;
    this.attempt = 0;
    this.socket = null;
    this.stopped = false;
    this.timer = null;
    /** Counts `connect` calls: an older one still waiting for its token gives up. */
    this.generation = 0;
    /** The sync token: where the events this page applied end (`ready.next`, then each `pos`). */
    this.syncToken = null;
    // Positions applied: everything at or below `floor`, and those in `recent` above it.
    // Events arrive in position order per conversation but not across conversations, so a
    // late lower position is not a duplicate (as on the server, ws/dedup.rs).
    this.floor = 0;
    this.recent = new Set();
    /**
     * One entry per connection, newest last: the `since` its `auth` frame carried, whether
     * `ready` said it resumed, and how many event frames came before `ready` (the replay).
     * Read by the browser tests (xtask/src/e2e.rs) and handy in the console.
     */
    this.connections = [];
    this.offline = false;
    window.addEventListener('offline', () => this.wentOffline());
    window.addEventListener('online', () => this.cameOnline());
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
    this.socket = null;
    this.syncToken = null;
  }

  /** Whether frames can be sent now. */
  get open() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN && this.ready;
  }

  send(frame) {
    if (this.open) this.socket.send(JSON.stringify(frame));
  }

  async connect() {
    this.ready = false;
    if (this.offline) return; // `online` reconnects
    this.generation += 1;
    const generation = this.generation;
    this.handlers.onStatus(this.attempt === 0 ? 'connecting' : 'reconnecting');
    let token;
    try {
      token = await this.getToken(this.needFreshToken);
    } catch {
      this.retry();
      return;
    }
    if (this.stopped || this.offline || generation !== this.generation) return;
    this.needFreshToken = false;
    if (this.socket) this.socket.close(1000); // never two sockets for one page
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/ws`);
    this.socket = socket;
    const since = this.syncToken;
    const record = { since, resumed: null, replayed: 0, next: null };
    this.connections.push(record);
    if (this.connections.length > KEPT_CONNECTIONS) this.connections.shift();
    // The sync token rides in the auth frame beside the JWT (§1): one frame says who and
    // from where, and the URL stays the same for every connection.
    socket.addEventListener('open', () => socket.send(JSON.stringify(since ? { type: 'auth', token, since } : { type: 'auth', token })));
    socket.addEventListener('message', (event) => {
      if (this.socket !== socket) return;
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (frame.type === 'ready') {
        // A later `ready` only answers a token refresh: the connection is already live.
        if (!this.ready) this.becameReady(frame, record);
        return;
      }
      if (!this.ready && frame.type === 'error' && since && frame.error
        && (frame.error.code === 'sync_token_expired' || frame.error.code === 'validation_failed')) {
        // The server cannot resume from our token; its `ready` follows with a fresh one
        // and `resumed: false`, and the page reloads then. Nothing to tell the user.
        return;
      }
      if (typeof frame.pos === 'number') {
        if (!this.admit(frame.pos)) return; // already applied
        if (!this.ready) record.replayed += 1;
      }
      this.handlers.onEvent(frame);
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.ready = false;
      if (this.stopped || this.offline) return;
      if (event.code === 1008) {
        this.needFreshToken = true;
        this.handlers.onAuthFailed(event.reason);
      }
      this.retry();
    });
  }

  becameReady(frame, record) {
    this.ready = true;
    this.attempt = 0;
    record.resumed = frame.resumed === true;
    record.next = frame.next || null;
    const next = positionOf(frame.next);
    if (record.resumed) {
      // The replay covered everything up to `next`.
      if (next !== null) this.raiseFloor(next);
    } else {
      // A fresh start, or a token the server could not resume from (expired, another
      // deployment whose positions are not comparable): the page reloads, which covers
      // everything up to `next`; positions kept from before mean nothing any more.
      this.floor = next === null ? 0 : next;
      this.recent = new Set();
      this.syncToken = null;
    }
    if (frame.next && (this.syncToken === null || next > positionOf(this.syncToken))) {
      this.syncToken = frame.next;
    }
    this.handlers.onStatus('online');
    this.handlers.onReady({ resumed: record.resumed });
  }

  /** Whether an event at `pos` is new (then it counts as applied and moves the token). */
  admit(pos) {
    if (pos <= this.floor || this.recent.has(pos)) return false;
    this.recent.add(pos);
    if (this.recent.size > RECENT_POSITIONS) {
      const oldest = Math.min(...this.recent);
      this.recent.delete(oldest);
      this.floor = oldest;
    }
    // The token only moves forward: a late lower position does not take it back.
    if (this.syncToken !== null && pos > positionOf(this.syncToken)) {
      this.syncToken = tokenAt(this.syncToken, pos);
    }
    return true;
  }

  raiseFloor(pos) {
    if (pos <= this.floor) return;
    this.floor = pos;
    for (const p of this.recent) if (p <= pos) this.recent.delete(p);
  }

  /** The browser lost the network: close now rather than wait for keep-alives to fail. */
  wentOffline() {
    if (this.stopped) return;
    this.offline = true;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    this.ready = false;
    if (socket) socket.close(1000);
    this.handlers.onStatus('offline');
  }

  /** The network is back: reconnect at once (and resume from the token). */
  cameOnline() {
    if (this.stopped || !this.offline) return;
    this.offline = false;
    this.attempt = 0;
    clearTimeout(this.timer);
    this.connect();
  }

  retry() {
    if (this.stopped || this.offline) return;
    this.handlers.onStatus('reconnecting');
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    // Full jitter in the upper half: clients that lost the same server spread out.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
