// The plugin's icons: [name used in plugin.json and the views, Clarity shape]. The build draws them, in this
// order, one 32x32 cell each, into the manifest's sprite sheets; plugin.json's definitions give y = 32 * index.
export const ICONS = [
  ["main", "shield-check"],
  ["protect", "shield"],
  ["vpg", "vmw-app"],
  ["failover", "bolt"],
  ["test", "play"],
  ["tag", "tag"],
  ["vra", "host"],
];
