"""vsphere_plugin package."""
