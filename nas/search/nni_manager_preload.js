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

// Two fixes to NNI 3.0's SSH client of remote machines (training_service/remote_v3/ssh.js):
// - NNI runs `python -m pip install nni --upgrade` on every remote machine before each search: it fails on a
//   machine without access to a package index, and would upgrade NNI past the version effnas works with.
//   nas.search checks beforehand that each machine has the right NNI (nas.search.remote_machines), so that
//   command is skipped; every other command runs as NNI wrote it.
// - NNI listens for no "error" on its SSH connection, so a connection that drops mid-search (network, sshd,
//   the machine) throws in the manager and ends it, with every trial. Here the error is logged, and the next
//   command reconnects: NNI then finds whether the machine's trial keeper lives, and if not, ends its trials
//   (the search stores them failed) and starts a new keeper.
function patchSsh(Ssh) {
  const run = Ssh.prototype.run;
  Ssh.prototype.run = function (command) {
    return / -m pip install nni --upgrade$/.test(command) ? Promise.resolve("") : run.call(this, command);
  };
  const connect = Ssh.prototype.connect;
  Ssh.prototype.connect = async function () {
    await connect.call(this);
    const client = this.client;
    client.on("error", (error) => this.log.error("SSH connection error:", error.message));
    client.on("close", () => {
      if (this.client === client) {
        this.log.warning("SSH connection closed; the next command reconnects");
        this.client = null;
        this.sftpSession = null;
      }
    });
  };
  const exec = Ssh.prototype.exec;
  Ssh.prototype.exec = async function (command) {
    if (this.client === null) {
      await connect.call(this);
    }
    return exec.call(this, command);
  };
}

// Trials that NNI ends because their remote machine was lost (its trial keeper is gone: the connection, the
// machine). NNI reports them USER_CANCELED, as if the search had cancelled them; they end SYS_CANCELED here, so
// that the search can store them as stopped by the system, and train them again on --resume.
const lostTrials = new Set();

function patchRemote(RemoteTrainingServiceV3) {
  const stopWorker = RemoteTrainingServiceV3.prototype.stopWorker;
  RemoteTrainingServiceV3.prototype.stopWorker = function (oldWorker, emitEnvUpdate) {
    this.workersByTrial.forEach((worker, trialId) => {
      if (worker === oldWorker) {
        lostTrials.add(trialId);
      }
    });
    return stopWorker.call(this, oldWorker, emitEnvUpdate);
  };
}

// NNI 3.0's v3 training services (local and remote, training_service/v3/compat.js) queue the parameters of
// submitted trials and hand the oldest to whichever trial process asks first. A trial process that dies before it
// asks (a lost machine, a kill while Python starts) leaves its parameter to the next process, which trains the
// wrong candidate while NNI reports the right one's end. Here each parameter goes to the trial created for it.
function patchCompat(V3asV1) {
  const submit = V3asV1.prototype.submitTrialJob;
  V3asV1.prototype.submitTrialJob = async function (form) {
    const trial = await submit.call(this, form);
    const value = form.hyperParameters.value;
    const queued = this.parameters.indexOf(value);
    if (queued >= 0) {
      this.parameters.splice(queued, 1);
      this.allocatedParameters.set(trial.id, value);
    }
    return trial;
  };
  const start = V3asV1.prototype.start;
  V3asV1.prototype.start = function () {
    const onTrialEnd = this.v3.onTrialEnd.bind(this.v3);
    this.v3.onTrialEnd = (callback) => onTrialEnd(async (trialId, timestamp, exitCode) => {
      await callback(trialId, timestamp, exitCode);
      if (lostTrials.delete(trialId) && this.trialJobs[trialId]) {
        this.trialJobs[trialId].status = "SYS_CANCELED";
      }
    });
    return start.call(this);
  };
}

const Module = require("module");
const load = Module._load;
Module._load = function (request, parent, isMain) {
  const exported = load.apply(this, arguments);
  if (exported && exported.RemoteTrainingServiceV3 && !exported.RemoteTrainingServiceV3.effnasPatched) {
    patchRemote(exported.RemoteTrainingServiceV3);
    exported.RemoteTrainingServiceV3.effnasPatched = true;
  }
  if (exported && exported.V3asV1 && !exported.V3asV1.effnasPatched) {
    patchCompat(exported.V3asV1);
    exported.V3asV1.effnasPatched = true;
  }
  if (request === "./ssh" && parent && /remote_v3/.test(parent.filename) && exported.Ssh && !exported.Ssh.effnasPatched) {
    patchSsh(exported.Ssh);
    exported.Ssh.effnasPatched = true;
  }
  return exported;
};
