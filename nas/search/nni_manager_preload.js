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

// NNI 3.0's remote worker runs `python -m pip install nni --upgrade` on every remote machine before each search:
// it fails on a machine without access to a package index, and would upgrade NNI past the version effnas works
// with. nas.search checks beforehand that each machine has the right NNI (nas.search.remote_machines), so that
// command is skipped; every other command runs as NNI wrote it.
const Module = require("module");
const load = Module._load;
Module._load = function (request, parent, isMain) {
  const exported = load.apply(this, arguments);
  if (request === "./ssh" && parent && /remote_v3/.test(parent.filename) && exported.Ssh && !exported.Ssh.effnasPatched) {
    const run = exported.Ssh.prototype.run;
    exported.Ssh.prototype.run = function (command) {
      return / -m pip install nni --upgrade$/.test(command) ? Promise.resolve("") : run.call(this, command);
    };
    exported.Ssh.effnasPatched = true;
  }
  return exported;
};
