// The WebSocket connection (docs/websocket.md): authenticates with its first frame,
// hands every event to `onEvent`, and reconnects with exponential back-off and jitter.
// After every `ready` it calls `onReady`, where the page catches up on what it missed.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;

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
    this.handlers.onStatus(this.attempt === 0 ? 'connecting' : 'reconnecting');
    let token;
    try {
      token = await this.getToken(this.needFreshToken);
    } catch {
      this.retry();
      return;
    }
    this.needFreshToken = false;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/ws`);
    this.socket = socket;
    socket.addEventListener('open', () => socket.send(JSON.stringify({ type: 'auth', token })));
    socket.addEventListener('message', (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (frame.type === 'ready') {
        if (!this.ready) {
          this.ready = true;
          this.attempt = 0;
          this.handlers.onStatus('online');
          this.handlers.onReady(frame);
        }
        return;
      }
      this.handlers.onEvent(frame);
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.ready = false;
      if (this.stopped) return;
      if (event.code === 1008) {
        this.needFreshToken = true;
        this.handlers.onAuthFailed(event.reason);
      }
      this.retry();
    });
  }

  retry() {
    if (this.stopped) return;
    this.handlers.onStatus('reconnecting');
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    // Full jitter in the upper half: clients that lost the same server spread out.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
