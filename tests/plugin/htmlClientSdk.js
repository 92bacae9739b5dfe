// A stand-in for the vSphere Client's JS API (/api/ui/htmlClientSdk.js), for the browser tests: each view
// runs in an iframe of client_host.html, as the client loads plugin views, and asks the host page (its
// parent, same origin) what the client would answer. Implements the calls the plugin uses.
(function () {
  const host = () => (window.parent.zvrHost || window.parent.parent.zvrHost);
  window.htmlClientSdk = {
    initialize(cb) { setTimeout(cb, 0); },
    app: {
      getContextObjects() { return host().contextFor(window); },
      getTheme() { return { name: host().theme }; },
      getSessionInfo(cb) { host().sessionInfo().then(cb); },
      navigateTo(options) { host().navigate(options); },
      getNavigationData() { return host().navigationFor(window); },
      getClientInfo() { return { type: "html", version: "8.0.3" }; },
    },
    event: {
      onThemeChanged(cb) { host().on("theme", window, cb); },
      onGlobalRefresh(cb) { host().on("refresh", window, cb); },
    },
    modal: {
      open(config) { host().openModal(config, window); },
      close(data) { host().closeModal(window, data); },
      setOptions() {},
    },
  };
})();
