// Where the charts' data comes from: the ZVM's statistics API (the monitoring history), the last hour in
// buckets of INTERVAL seconds. GET /v1/statistics/vpgs answers one entry per VPG, GET /v1/vpgs/{id}/statistics
// one VPG; each lists its buckets oldest first and leaves out a bucket without data. Here every bucket of the
// hour gets a place, null where there was no data, so a chart draws a gap there and never a made-up zero.
// The page holds the hour and asks only for its newest buckets, at most every REREAD_MS: a 5-second poll of
// the dashboard does not read the whole hour each time.
import * as api from "./api.js";

export const HOUR = 3600;
export const INTERVAL = 60;
const REREAD_MS = 30000;

/** The hour that ends at the end of the current bucket: [start, end) in epoch seconds, bucket aligned. */
export function lastHour(now = Date.now() / 1000) {
  const end = Math.ceil(now / INTERVAL) * INTERVAL;
  return { start: end - HOUR, end };
}

function query({ start, end }) {
  return api.query({ startDate: new Date(start * 1000).toISOString(), endDate: new Date(end * 1000).toISOString(),
    interval: INTERVAL });
}

const bucketOf = (sample) => Math.floor(Date.parse(sample.TimeStamp) / 1000 / INTERVAL);
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/** The hour's buckets: their start times, and for each the samples of ``held`` (VPG -> bucket -> sample). */
function columns(held, start) {
  const t = Array.from({ length: HOUR / INTERVAL }, (_, i) => start + i * INTERVAL);
  const at = t.map((x) => [...held.values()].map((m) => m.get(x / INTERVAL)).filter(Boolean));
  return { t, at };
}

/** Every VPG together: {t, rpoMax, rpoAvg, mbps, iops}, one value per bucket, null where no VPG had data. */
export function fleetSeries(held, start) {
  const { t, at } = columns(held, start);
  const some = (f) => at.map((here) => (here.length ? f(here) : null));
  return { t, rpoMax: some((h) => Math.max(...h.map((s) => s.ActualRPO))),
    rpoAvg: some((h) => sum(h.map((s) => s.AverageRPO)) / h.length),
    mbps: some((h) => sum(h.map((s) => s.ThroughputInMB))), iops: some((h) => sum(h.map((s) => s.IOPs))) };
}

/** One VPG: {t, rpo, rpoAvg, mbps, wan, iops, journal, history}, null where the bucket had no data. */
export function vpgSeries(held, start) {
  const { t, at } = columns(held, start);
  const out = { t };
  const keys = { rpo: "ActualRPO", rpoAvg: "AverageRPO", mbps: "ThroughputInMB", wan: "WanThroughputInMB",
    iops: "IOPs", journal: "JournalUsedStorageInMB", history: "ActualHistoryInMinutes" };
  for (const [k, field] of Object.entries(keys)) out[k] = at.map((here) => (here.length ? here[0][field] : null));
  return out;
}

/**
 * A reader of one statistics path: the whole hour the first time, then only its last two buckets (the one
 * still filling and the one before, whose last sample may have come late), merged into what it holds, at
 * most every REREAD_MS; otherwise it answers its last {hour, series, available}. A ZVM without the
 * statistics API (404 NotFound: an older version) gives empty series: the charts show no data, the rest of
 * the page works.
 */
function reader(path, toSeries) {
  const held = new Map(); // VpgIdentifier -> Map(bucket number -> sample)
  let last = null;
  let at = 0;
  let readUpTo = null;
  let reading = null; // a read in flight: a refresh that comes meanwhile waits for it instead of asking again
  const read = async (force) => {
    if (!force && last && Date.now() - at < REREAD_MS) return last;
    const hour = lastHour();
    const from = readUpTo === null ? hour.start : Math.max(hour.start, readUpTo - 2 * INTERVAL);
    let answer;
    try {
      answer = await api.get(`${path}${query({ start: from, end: hour.end })}`);
    } catch (err) {
      if (err.status !== 404 || err.code !== "NotFound") throw err;
      answer = null;
    }
    for (const v of answer === null ? [] : [answer].flat()) {
      const mine = held.get(v.VpgIdentifier) || new Map();
      for (const s of v.Samples || []) mine.set(bucketOf(s), s);
      held.set(v.VpgIdentifier, mine);
    }
    for (const [id, mine] of held) { // what left the hour, and VPGs with nothing left in it
      for (const b of mine.keys()) if (b < hour.start / INTERVAL) mine.delete(b);
      if (!mine.size) held.delete(id);
    }
    readUpTo = hour.end;
    last = { hour, series: toSeries(held, hour.start), available: answer !== null };
    at = Date.now();
    return last;
  };
  return (force = false) => {
    reading = reading || read(force).finally(() => { reading = null; });
    return reading;
  };
}

/** The dashboard's reader: every VPG over the last hour. */
export function fleetReader() {
  return reader("/statistics/vpgs", fleetSeries);
}

/** A VPG page's reader. */
export function vpgReader(id) {
  return reader(`/vpgs/${encodeURIComponent(id)}/statistics`, vpgSeries);
}
