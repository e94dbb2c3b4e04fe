// Checks one machine of NNI's `remote` training service the way NNI's manager will reach it: over SSH with the
// ssh2 library NNI bundles, with the same credentials and the same search for Python. Run by
// nas.search.remote_machines with NODE_PATH set to NNI's node_modules.
//
// stdin: {"host", "port", "user", "password", "sshKeyFile", "sshPassphrase", "pythonPath", "script"}
// stdout: one JSON object: {"stage": "connect" | "python" | "script", "ok": bool, "message", "output"}
"use strict";

const fs = require("fs");
const { Client } = require("ssh2");

const CONNECT_TIMEOUT_MS = 20000;

function answer(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}

function exec(client, command, input) {
  return new Promise((resolve, reject) => {
    client.exec(command, (error, stream) => {
      if (error) {
        reject(error);
        return;
      }
      let stdout = "";
      let stderr = "";
      stream.on("data", (data) => { stdout += String(data); });
      stream.stderr.on("data", (data) => { stderr += String(data); });
      stream.on("close", (code) => resolve({ code, stdout, stderr }));
      stream.end(input || "");
    });
  });
}

// NNI's worker tries pythonPath's python and python3, then puts pythonPath first on PATH; so does this.
async function findPython(client, pythonPath) {
  const prefix = pythonPath ? `PATH="${pythonPath}:$PATH" ` : "";
  for (const python of ["python3", "python"]) {
    const result = await exec(client, `${prefix}${python} --version`);
    if (result.code === 0 && !`${result.stdout}${result.stderr}`.startsWith("Python 2")) {
      return `${prefix}${python}`;
    }
  }
  return null;
}

async function main() {
  const machine = JSON.parse(fs.readFileSync(0, "utf8"));
  const options = {
    host: machine.host,
    port: machine.port || 22,
    username: machine.user,
    password: machine.password || undefined,
    readyTimeout: CONNECT_TIMEOUT_MS,
  };
  if (machine.sshKeyFile && !machine.password) {
    options.privateKey = fs.readFileSync(machine.sshKeyFile, "utf8");
    options.passphrase = machine.sshPassphrase || undefined;
  }
  const client = new Client();
  client.on("error", (error) => answer({ stage: "connect", ok: false, message: error.message, level: error.level }));
  client.on("ready", async () => {
    try {
      const python = await findPython(client, machine.pythonPath);
      if (python === null) {
        answer({ stage: "python", ok: false, message: "no Python 3 (python3 or python) on the PATH" });
      }
      const result = await exec(client, `NNI_FRAMEWORK=none ${python} -W ignore -`, machine.script);
      answer({ stage: "script", ok: result.code === 0, output: result.stdout, message: result.stderr.trim() });
    } catch (error) {
      answer({ stage: "python", ok: false, message: String(error && error.message) });
    }
  });
  client.connect(options);
}

main().catch((error) => answer({ stage: "connect", ok: false, message: String(error && error.message) }));
