// Preloaded into NNI's Node.js manager (NODE_OPTIONS=--require) when its trials run on this machine: NNI 3.0
// listens on all interfaces and has no setting for the address, so a listen() given only a port is bound to
// 127.0.0.1 here. Trial processes reach the manager through localhost.
"use strict";
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && (args.length === 1 || typeof args[1] === "function")) {
    args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
