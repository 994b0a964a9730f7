// aedes as a benchmark peer (bench/peers.py starts it; scripts/bench installs it).
//
//   node broker.mjs [--cert CERT --key KEY]
//
// Listens on 127.0.0.1 only, ephemeral ports: plain MQTT and, with a certificate, MQTT over
// TLS.  Prints one JSON line {"pid", "ports": {"mqtt", "mqtt_tls"}} once both listen, then
// serves until SIGTERM.  In-memory persistence (aedes' default), anonymous clients, Nagle
// off on every socket: the configuration that matches mosquitto's in bench/peers.py.
import { Aedes } from 'aedes'
import fs from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'

function arg (name) {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : undefined
}

function listen (server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => resolve(server.address().port))
  })
}

const broker = await Aedes.createBroker()
const handle = (socket) => {
  socket.setNoDelay(true)
  broker.handle(socket)
}
const ports = { mqtt: await listen(net.createServer(handle)) }
const cert = arg('--cert')
if (cert) {
  const options = { cert: fs.readFileSync(cert), key: fs.readFileSync(arg('--key')) }
  ports.mqtt_tls = await listen(tls.createServer(options, handle))
}
process.on('SIGTERM', () => process.exit(0))
process.stdout.write(JSON.stringify({ pid: process.pid, ports }) + '\n')
