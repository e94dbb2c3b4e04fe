// Preloaded into NNI's Node.js manager (NODE_OPTIONS=--require) by nas.search.trial_processes (_manager_preload).
// Each patch names the NNI 3.0 behaviour it works around and the test that fails without it.
"use strict";

// NNI 3.0 listens on all interfaces, with no authentication, and has no setting for the address
// (nni_manager/main.ts calls listen(port)). Given EFFNAS_MANAGER_ADDRESS, a listen() given only a port is bound to
// that address: 127.0.0.1 for local trials, the address the remote machines reach for remote ones.
// Tests: test_parallel.py::test_two_workers_train_in_separate_processes_with_the_results_of_one (local),
// test_remote.py::test_remote_trials_land_once_with_the_architectures_of_an_in_process_search (remote).
const address = process.env.EFFNAS_MANAGER_ADDRESS;
if (address) {
  const net = require("net");
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (...args) {
    if (typeof args[0] === "number" && (args.length === 1 || typeof args[1] === "function")) {
      args.splice(1, 0, address);
    }
    return listen.apply(this, args);
  };
}

// NNI 3.0 starts the manager in a process group of its own, so it outlives a search process that was killed
// (SIGKILL, out of memory), with its trials. Here it ends when its parent, the search, is gone.
// Test: test_parallel.py::test_sigkill_of_the_search_takes_manager_and_trials_along_and_resume_finishes.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) {
    process.exit(0);
  }
}, 1000).unref();

// Two fixes to NNI 3.0's SSH client of remote machines (training_service/remote_v3/ssh.js):
// - NNI runs `python -m pip install nni --upgrade` on every remote machine before each search: it installs into
//   the user's environment without asking, and would upgrade NNI past the version effnas works with.
//   nas.search checks beforehand that each machine has the right NNI (nas.search.remote_machines), so that
//   command is skipped; every other command runs as NNI wrote it.
// - NNI listens for no "error" on its SSH connection, so a connection that is reset mid-search (network, sshd,
//   the machine) throws in the manager and ends it, with every trial. Here the error is logged, and the next
//   command reconnects: when the trial keeper's channel drops too, NNI asks over SSH whether the keeper lives;
//   without a connection that check fails, and NNI takes a live keeper for dead and ends its trials.
// Tests: test_remote.py::test_remote_trials_land_once_with_the_architectures_of_an_in_process_search (the machine's
// Python logs every command; the SSH connection and the keeper's channel are reset mid-search).
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
// Test: test_remote.py::test_a_lost_machine_interrupts_its_trials_the_search_goes_on_and_resume_trains_them.
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
// submitted trials and hand the oldest to whichever trial process asks first. A trial process that asks before the
// one made for the oldest (that one starts late, or dies before it asks) trains the other's candidate, and when its
// trial ends the search reads its own candidate's row, still untrained, and calls it failed. Here each parameter
// goes to the trial created for it.
// Tests: test_parallel.py::test_a_killed_trial_process_is_recorded_failed_and_the_search_goes_on and
// test_remote.py::test_a_remote_trial_process_that_starts_late_trains_its_own_candidate.
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

// NNI's manager requires these classes from files of its own bundle, which export nothing a preload can reach
// before the manager starts: each is patched once, as Node.js first loads it.
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
