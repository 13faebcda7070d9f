// A throwaway test PKI made with the openssl CLI at bench time: a CA, a server and a client
// certificate (P-256; the data channel cost does not depend on the certificate type).
import {execFileSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {mkdirSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'

const ossl = (args, cwd) => execFileSync('openssl', args, {cwd, stdio: ['ignore', 'pipe', 'pipe']})
const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

function issue(dir, name, eku) {
  writeFileSync(join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${eku}\n`)
  ossl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=bench-${name}`], dir)
  ossl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', `0x${randomBytes(8).toString('hex')}`,
    '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`], dir)
}

/** @returns {{dir: string, ca: string, serverCert: string, serverKey: string, clientCert: string, clientKey: string}} */
export function makeTestPki(dir) {
  mkdirSync(dir, {recursive: true})
  ossl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=bench-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir)
  issue(dir, 'server', 'serverAuth')
  issue(dir, 'client', 'clientAuth')
  const p = (f) => join(dir, f)
  return {dir, ca: p('ca.crt'), serverCert: p('server.crt'), serverKey: p('server.key'), clientCert: p('client.crt'), clientKey: p('client.key')}
}
