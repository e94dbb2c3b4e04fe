// Preloaded into NNI's Node.js manager (NODE_OPTIONS=--require) by nas.search.nni_adapters (_manager_preload).
"use strict";

// NNI 3.0 listens on all interfaces and has no setting for the address. When the trials run on this machine
// (EFFNAS_MANAGER_LOOPBACK=1), a listen() given only a port is bound to 127.0.0.1; trials reach it through
// localhost.
if (process.env.EFFNAS_MANAGER_LOOPBACK === "1") {
  const net = require("net");
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (...args) {
    if (typeof args[0] === "number" && (args.length === 1 || typeof args[1] === "function")) {
      args.splice(1, 0, "127.0.0.1");
    }
    return listen.apply(this, args);
  };
}

// The manager runs in a process group of its own and outlives a search process that was killed (SIGKILL, out of
// memory): it ends when its parent, the search, is gone.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) {
    process.exit(0);
  }
}, 1000).unref();
