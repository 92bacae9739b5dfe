// Where the charts' data comes from: one function, so a statistics API can replace it without touching a view.
// The REST API has no history yet (the monitoring history API is to come: docs/PLUGIN.md), so the dashboard
// keeps the last hour of what it polls (ActualRPO, ThroughputInMB, IOPs of every VPG) in sessionStorage:
// the charts start when the dashboard opens and survive a reload of the page.
const KEY = "zvr-history-v1";
const HOUR = 3600;

function load() {
  try { return JSON.parse(sessionStorage.getItem(KEY)) || []; } catch { return []; }
}

/** Record one poll of GET /v1/vpgs; returns the samples of the last hour, oldest first. */
export function record(vpgs, now = Date.now() / 1000) {
  const samples = load().filter((s) => s.t > now - HOUR);
  const rpo = vpgs.map((v) => v.ActualRPO).filter((x) => x !== null && x !== undefined);
  samples.push({
    t: now,
    rpoMax: rpo.length ? Math.max(...rpo) : null,
    rpoAvg: rpo.length ? rpo.reduce((a, b) => a + b, 0) / rpo.length : null,
    mbps: vpgs.reduce((a, v) => a + (v.ThroughputInMB || 0), 0),
    iops: vpgs.reduce((a, v) => a + (v.IOPs || 0), 0),
  });
  try { sessionStorage.setItem(KEY, JSON.stringify(samples)); } catch { /* full: the chart just forgets */ }
  return samples;
}

/** Series for the charts: {t: [...], rpoMax, rpoAvg, mbps, iops}. */
export function series(samples) {
  const out = { t: [], rpoMax: [], rpoAvg: [], mbps: [], iops: [] };
  for (const s of samples) for (const k of Object.keys(out)) out[k].push(s[k]);
  return out;
}
