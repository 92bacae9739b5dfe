// The one door to the ZVM's REST API (/v1). Same-origin fetch: the session is an HttpOnly cookie, and every
// state-changing call carries the CSRF token the ZVM set beside it (cookie zvr_csrf, header X-CSRF-Token).
// An API error becomes an ApiError with the API's {Code, Message, Field}; a network failure shows the
// "connection lost" banner, and reads retry with a growing delay until the ZVM answers again (writes are
// never retried by themselves: a repeated write is the user's decision). window.zvrStats counts calls and
// bytes, for the benchmark. The API answers enumerations as Zerto's numbers; decode() turns them back into
// the words the views show and compare (enums.js, generated from zvm/enums.py), here and nowhere else.
import * as E from "./enums.js";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.Message) || `the ZVM answered ${status}`);
    this.status = status;
    this.code = (body && body.Code) || "Error";
    this.field = (body && body.Field) || null;
  }
}

export const stats = (window.zvrStats = window.zvrStats || { calls: 0, bytes: 0, started: performance.now() });
const listeners = { offline: [], online: [], unauthorized: [] };
export function on(event, fn) { listeners[event].push(fn); }
function emit(event, arg) { for (const fn of listeners[event]) fn(arg); }

function cookie(name) {
  const m = document.cookie.match(new RegExp(`(?:^|; )${name}=([^;]*)`));
  return m ? decodeURIComponent(m[1]) : "";
}

let offline = false;
const WRITE = new Set(["POST", "PUT", "DELETE", "PATCH"]);

async function once(method, path, body, headers = {}) {
  const h = { Accept: "application/json", ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  if (WRITE.has(method)) h["X-CSRF-Token"] = cookie("zvr_csrf");
  const resp = await fetch(`/v1${path}`, {
    method, headers: h, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  stats.calls += 1;
  const text = await resp.text();
  stats.bytes += text.length;
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = null; } }
  // The OpenAPI document describes the shapes (its schemas have SubStatus, Basic... as properties): not
  // one of them, so it is not decoded. A decoding error is the page's bug: it shows, it is not an empty answer.
  if (data !== null && path !== "/openapi.json") data = decode(data);
  if (!resp.ok) {
    const err = new ApiError(resp.status, data);
    if (resp.status === 401 && path !== "/session/add") emit("unauthorized", err);
    throw err;
  }
  return data;
}

const word = (table, v) => (typeof v === "number" && table[v] !== undefined ? table[v] : v);

/** Numbers of the API's enumerations -> the product's words, by the shape of each object. */
export function decode(data) {
  if (Array.isArray(data)) return data.map(decode);
  if (!data || typeof data !== "object") return data;
  const o = {};
  for (const [k, v] of Object.entries(data)) o[k] = decode(v);
  if ("SubStatus" in o) {
    o.Status = word(E.VpgStatus, o.Status);
    o.SubStatus = word(E.VpgSubStatus, o.SubStatus);
    o.Priority = word(E.VpgPriority, o.Priority);
  }
  if ("VraIdentifier" in o && "State" in o) {
    o.State = word(E.VraStatus, o.State);
    if ("Status" in o) o.Status = word(E.VraStatus, o.Status);
  }
  if ("TaskIdentifier" in o && "Type" in o && o.Status && typeof o.Status === "object") {
    o.Type = word(E.TaskType, o.Type);
    o.Status = { ...o.Status, State: word(E.TaskState, o.Status.State) };
  }
  if ("PairingStatus" in o) o.PairingStatus = word(E.PairingStatus, o.PairingStatus);
  if ("AlertIdentifier" in o) {
    o.Level = word(E.AlertLevel, o.Level);
    o.Entity = word(E.AlertEntity, o.Entity);
  }
  if ("EventIdentifier" in o && "EventKind" in o) o.EventType = o.EventKind;
  if ("VpgSettingsIdentifier" in o && o.Basic) {
    // the wizard edits the flat form the API also takes (Journal.HardLimitInMB, Networks.FailoverNetworkIdentifier)
    o.Basic = { ...o.Basic, Priority: word(E.VpgPriority, o.Basic.Priority) };
    const { Limitation, ...journal } = o.Journal;
    o.Journal = { ...journal, HardLimitInMB: Limitation.HardLimitInMB, WarningThresholdInMB: Limitation.WarningThresholdInMB };
    const net = (n) => (n && n.Hypervisor ? n.Hypervisor.DefaultNetworkIdentifier : null);
    o.Networks = { FailoverNetworkIdentifier: net(o.Networks.Failover), FailoverTestNetworkIdentifier: net(o.Networks.FailoverTest) };
    o.BootGroups = o.BootGroups.BootGroups;
  }
  return o;
}

function wentOffline(err) {
  if (!offline) { offline = true; emit("offline", err); }
}
function cameBack() {
  if (offline) { offline = false; emit("online"); }
}

let wake = null;
/** Retry a waiting read now (the banner's Retry button). */
export function retryNow() { if (wake) wake(); }

export async function request(method, path, body, headers) {
  let delay = 1000;
  for (;;) {
    try {
      const data = await once(method, path, body, headers);
      cameBack();
      return data;
    } catch (err) {
      if (err instanceof ApiError) {
        if (err.status !== 503 && err.status !== 502 && err.status !== 504) cameBack();
        throw err;
      }
      wentOffline(err);
      if (WRITE.has(method)) throw new ApiError(0, { Code: "ConnectionLost", Message: "the ZVM cannot be reached: nothing was sent; try again when the connection is back" });
      await new Promise((resolve) => { wake = resolve; setTimeout(resolve, delay); });
      delay = Math.min(delay * 2, 15000);
    }
  }
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const put = (path, body) => request("PUT", path, body);
export const del = (path, body) => request("DELETE", path, body);

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Log in with the ZVM's own user: the answer sets the session cookie (the token never reaches the page). */
export function login(user, password) {
  const basic = btoa(unescape(encodeURIComponent(`${user}:${password}`)));
  return once("POST", "/session/add", undefined, { Authorization: `Basic ${basic}`, "X-ZVR-Session-Cookie": "1" });
}

export async function logout() {
  try { await once("DELETE", "/session"); } catch { /* gone already */ }
}

/** Inside the vSphere Client: trade the client's session (a clone ticket) for a ZVM session cookie. */
export async function loginWithVsphere(ticket) {
  const resp = await fetch("/plugin/auth/vsphere", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ CloneTicket: ticket }),
  });
  stats.calls += 1;
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}
