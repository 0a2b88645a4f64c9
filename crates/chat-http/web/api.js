// The REST API (/api/v1): one method per route the page uses. Errors are thrown as
// ApiError carrying the problem document's status and code.

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = problem && problem.code;
  }
}

async function call(method, path, token, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Whether this server mints development tokens (`chatd serve --dev`). */
export async function devTokensAvailable() {
  try {
    await call('POST', '/dev/token', null, { user_id: 0 });
    return true;
  } catch (err) {
    return err.status === 400;
  }
}

/** Mints a development token. */
export async function mintDevToken(userId, name) {
  const out = await call('POST', '/dev/token', null, { user_id: userId, name });
  return out.token;
}

/** The user id (`sub`) a token names, read without verifying it. */
export function userOfToken(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part));
    return { id: Number(claims.sub), name: claims.name || null };
  } catch {
    return null;
  }
}

const q = (params) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) s.set(k, v);
  return s.toString();
};

export class Api {
  constructor(token) {
    this.token = token;
  }

  get(path) { return call('GET', path, this.token); }
  post(path, body) { return call('POST', path, this.token, body); }
  patch(path, body) { return call('PATCH', path, this.token, body); }
  put(path) { return call('PUT', path, this.token); }
  del(path) { return call('DELETE', path, this.token); }

  /** Every conversation of the inbox (following the cursor). */
  async inbox(archived) {
    const all = [];
    let cursor;
    for (let i = 0; i < 20; i += 1) {
      const page = await this.get(`/conversations?${q({ limit: 100, cursor, archived: archived ? 'any' : 'false' })}`);
      all.push(...page.items);
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    return all;
  }

  conversation(id) { return this.get(`/conversations/${id}`); }
  history(id, params) { return this.get(`/conversations/${id}/messages?${q({ limit: 50, ...params })}`); }
  send(id, content, replyTo, clientMessageId) {
    return this.post(`/conversations/${id}/messages`, {
      content, reply_to_id: replyTo || null, client_message_id: clientMessageId,
    });
  }
  edit(messageId, content) { return this.patch(`/messages/${messageId}`, { content }); }
  remove(messageId) { return this.del(`/messages/${messageId}`); }
  react(messageId, emoji) { return this.put(`/messages/${messageId}/reactions/${encodeURIComponent(emoji)}`); }
  unreact(messageId, emoji) { return this.del(`/messages/${messageId}/reactions/${encodeURIComponent(emoji)}`); }
  receipts(messageId) { return this.get(`/messages/${messageId}/receipts`); }
  markRead(id) { return this.post(`/conversations/${id}/read`, {}); }
  openDirect(userId) { return this.post('/conversations/direct', { user_id: userId }); }
  createGroup(name, ids) { return this.post('/conversations', { type: 'GROUP', name, participant_ids: ids }); }
  addMembers(id, ids) { return this.post(`/conversations/${id}/participants`, { user_ids: ids }); }
  removeMember(id, userId) { return this.del(`/conversations/${id}/participants/${userId}`); }
  setMuted(id, muted) { return this.patch(`/conversations/${id}/membership`, { is_muted: muted }); }
  setArchived(id, archived) { return this.patch(`/conversations/${id}`, { is_archived: archived }); }
}
