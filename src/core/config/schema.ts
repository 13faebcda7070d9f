/**
 * The JSON Schema of node and client config files: the single source of the config's shape,
 * its defaults (read by resolve.ts) and its TypeScript types (types.ts, via FromSchema).
 * scripts/gen-schema.mjs writes it to schema/agent-config.schema.json for editors.
 *
 * This module must stay dependency-free: the generator imports its compiled form directly.
 *
 * Conventions:
 * - Every object has `additionalProperties: false`, so a typo is an error, not a silent default.
 * - String syntax is checked with `pattern` plus `patternErrorMessage`, a keyword VS Code's
 *   JSON/YAML language servers show instead of the raw regex; our validator uses it too.
 * - Relations between fields (address inside subnet, unique names...) are in semantic.ts.
 */

const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])'
const IPV4 = `${OCTET}(?:\\.${OCTET}){3}` as const
const PREFIX = '(?:3[0-2]|[12]?[0-9])'
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?'

const name = {
  type: 'string',
  pattern: '^[a-z0-9][a-z0-9-]{0,15}$',
  patternErrorMessage: 'must be 1 to 16 characters of a-z, 0-9 and "-", not starting with "-"',
} as const

const ipv4 = {
  type: 'string',
  pattern: `^${IPV4}$`,
  patternErrorMessage: 'must be an IPv4 address such as 10.8.0.1',
} as const

const cidr = {
  type: 'string',
  pattern: `^${IPV4}/${PREFIX}$`,
  patternErrorMessage: 'must be an IPv4 network in CIDR notation such as 10.8.0.0/24',
} as const

const ifname = {
  type: 'string',
  // Linux IFNAMSIZ is 16 including the NUL; "." and ".." would be paths under /sys/class/net.
  pattern: '^(?!\\.\\.?$)[A-Za-z0-9_.-]{1,15}$',
  patternErrorMessage: 'must be a network interface name: 1 to 15 characters of A-Z, a-z, 0-9, "_", "." and "-"',
} as const

const transportName = {
  type: 'string',
  description: 'Name of a transport plugin (tls, gre, ipip, ipsec-over-gre, or any installed plugin).',
  // Not an enum: transports are plugins discovered at run time.
  pattern: '^[a-z0-9][a-z0-9-]*$',
  patternErrorMessage: 'must be a transport name: a-z, 0-9 and "-", such as tls or ipsec-over-gre',
  default: 'tls',
} as const

const port = {type: 'integer', minimum: 1, maximum: 65535} as const

const mtu = {
  type: 'integer',
  minimum: 576,
  maximum: 9000,
  description: 'MTU of the TUN device. Omit to derive it from the transport overhead at run time.',
} as const

const path = {type: 'string', minLength: 1} as const

const pki = {
  type: 'object',
  description:
    'Credentials: either `bundle` (one PEM file with CA, certificate and key) or all of `ca`, `cert` and `key`. ' +
    'Relative paths are relative to the config file.',
  properties: {
    ca: {...path, description: 'PEM file of the fleet CA certificate.'},
    cert: {...path, description: 'PEM file of this instance\'s certificate.'},
    key: {...path, description: 'PEM file of this instance\'s private key.'},
    bundle: {...path, description: 'One PEM file holding the CA certificate, the certificate and the key.'},
  },
  additionalProperties: false,
} as const

/** One listed client of a node. */
export const clientEntrySchema = {
  type: 'object',
  properties: {
    name: {...name, description: "The client certificate's common name."},
    address: {...ipv4, description: 'Static tunnel address. Default: one from the pool.'},
    fingerprint: {
      type: 'string',
      pattern: '^(?:[Ss][Hh][Aa]256:)?(?:[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}|[0-9A-Fa-f]{64})$',
      patternErrorMessage:
        'must be a SHA-256 fingerprint: 32 hex pairs separated by ":" or 64 hex digits, optionally after "sha256:"',
      description: 'If set, the client certificate must also have this SHA-256 fingerprint.',
    },
  },
  required: ['name'],
  additionalProperties: false,
} as const

/** "any": every client certificate of the fleet CA that is not revoked. */
const anyClient = {type: 'string', const: 'any', errorMessage: 'must be "any" or a client ({name, address?, fingerprint?})'} as const

/** A node's credentials may name a CRL of the fleet CA. */
const nodePki = {
  ...pki,
  properties: {
    ...pki.properties,
    crl: {
      ...path,
      description:
        'PEM file of the fleet CA\'s CRL (`agent pki crl`). Revoked client certificates are refused, and a connected ' +
        'revoked client is cut. Re-read on `agent reload` and whenever the file changes.',
    },
  },
} as const

/** A node's shared roster and registry in etcd (src/core/fleet, docs/fleet.md). */
const fleet = {
  type: 'object',
  description:
    'The fleet this node belongs to: its roster (authorized clients, revocations) comes from etcd as well as from ' +
    'this file, and it registers itself there. Omit for a node on its own. Relative paths are relative to the config file.',
  properties: {
    endpoints: {
      type: 'array',
      minItems: 1,
      items: {type: 'string', pattern: '^https://[^/\\s]+:[0-9]{1,5}$', patternErrorMessage: 'must be https://host:port'},
      description: 'etcd client URLs (https): every member, or as many as you like; any one that answers is enough.',
    },
    ca: {...path, description: "PEM file of the CA that signed the etcd members' certificates."},
    cert: {...path, description: "PEM file of this node's etcd client certificate (its common name is its etcd user)."},
    key: {...path, description: 'PEM file of its private key.'},
    prefix: {
      type: 'string',
      pattern: '^(/[A-Za-z0-9_.-]+)+$',
      patternErrorMessage: 'must be an absolute key path such as /agent/fleet1, without a trailing slash',
      default: '/agent/fleet',
      description: "The fleet's key prefix in etcd: several fleets can share one etcd cluster.",
    },
    advertise: {
      type: 'string',
      minLength: 1,
      description:
        'Host (address or name) clients use to reach this node, as told to other nodes\' clients and shown by ' +
        '`agent fleet nodes`. Default: listen.address, unless that is 0.0.0.0.',
    },
    unreachable: {
      type: 'string',
      enum: ['start', 'refuse'],
      default: 'start',
      description:
        'When etcd cannot be reached at start-up: "start" serves with the roster of this file and catches up once etcd ' +
        'answers; "refuse" fails the start.',
    },
  },
  required: ['endpoints', 'ca', 'cert', 'key'],
  additionalProperties: false,
} as const

const carrier = {
  type: 'string',
  enum: ['udp', 'ip'],
  default: 'udp',
  description: '"udp": in UDP datagrams (crosses NAT); "ip": as raw IP packets (no NAT on the path).',
} as const

/** Datagram carriers: the client's keepalive keeps the NAT mapping and lets the node follow a rebinding. */
const datagramKeepalive = {
  type: 'integer',
  minimum: 1,
  maximum: 300,
  default: 15,
  description:
    'Seconds between the client\'s authenticated keepalives, sent whether or not data flows. Below 25 so an idle ' +
    'NAT mapping survives Linux\'s 30 s unreplied-UDP timeout; also the most a NAT rebinding interrupts traffic.',
} as const

const transports = {
  type: 'object',
  description:
    'Per-transport options. The built-in transports\' options are checked here; a transport from another plugin ' +
    'takes flat options (strings, numbers, booleans) that go to the plugin as they are.',
  default: {},
  properties: {
    tls: {
      type: 'object',
      default: {},
      properties: {
        keepalive: {
          type: 'integer',
          minimum: 1,
          maximum: 300,
          default: 10,
          description: 'Seconds between keepalive pings on the connection.',
        },
      },
      additionalProperties: false,
    },
    gre: {
      type: 'object',
      default: {},
      properties: {
        carrier,
        port: {...port, default: 4754, description: 'UDP port of the node (carrier udp).'},
        keepalive: datagramKeepalive,
        checksum: {type: 'boolean', default: false, description: 'Add the GRE checksum field.'},
        sequence: {type: 'boolean', default: false, description: 'Add the GRE sequence number field.'},
      },
      additionalProperties: false,
    },
    ipip: {
      type: 'object',
      default: {},
      properties: {
        carrier,
        port: {...port, default: 4755, description: 'UDP port of the node (carrier udp).'},
        keepalive: datagramKeepalive,
      },
      additionalProperties: false,
    },
    'ipsec-over-gre': {
      type: 'object',
      default: {},
      properties: {
        carrier,
        port: {...port, default: 4754, description: 'UDP port of the node (carrier udp).'},
        keepalive: datagramKeepalive,
        rekeySeconds: {
          type: 'integer',
          minimum: 10,
          maximum: 86400,
          default: 3600,
          description: 'Seconds after which a session derives fresh keys.',
        },
      },
      additionalProperties: false,
    },
  },
  patternProperties: {
    '^[a-z0-9][a-z0-9-]*$': {
      type: 'object',
      additionalProperties: {type: ['string', 'number', 'boolean']},
    },
  },
  additionalProperties: false,
} as const

const log = {
  type: 'object',
  default: {},
  properties: {
    level: {type: 'string', enum: ['trace', 'debug', 'info', 'warn', 'error'], default: 'info', description: 'Least severe level logged.'},
    format: {
      type: 'string',
      enum: ['text', 'json'],
      default: 'text',
      description: 'text: one line per event for people and journald; json: one JSON object per line for log shippers (docs/logging.md). `agent up --log-format` overrides it.',
    },
  },
  additionalProperties: false,
} as const

/**
 * The Prometheus endpoint (docs/metrics.md). Absent: off. `{}`: on loopback, at the role's
 * default port (node 9469, client 9470). No default here: its absence is the setting "off".
 */
const metrics = {
  type: 'object',
  description:
    'Serve Prometheus metrics over HTTP at /metrics (docs/metrics.md). Absent: no endpoint. `{}`: 127.0.0.1:9469 on a node, 127.0.0.1:9470 on a client. ' +
    'Cannot change on reload.',
  properties: {
    listen: {
      type: 'string',
      pattern: `^${IPV4}:[0-9]{1,5}$`,
      patternErrorMessage: 'must be an IPv4 address and a port such as 127.0.0.1:9469',
      description: 'Address and port to serve /metrics on. Default: 127.0.0.1:9469 (node), 127.0.0.1:9470 (client). A non-loopback address exposes peer names and traffic: it is logged as a warning.',
    },
    perPeer: {
      type: 'boolean',
      default: true,
      description: 'Series per peer (label `peer`). false: only aggregate series, whose count does not grow with the roster (nodes with thousands of clients).',
    },
  },
  additionalProperties: false,
} as const

/** Lets a YAML file name its schema for editors; ignored by the agent. */
const schemaKey = {type: 'string', description: 'Path or URL of this JSON Schema, for editors.'} as const

export const nodeConfigSchema = {
  type: 'object',
  title: 'Node config',
  description: 'A proxy node: accepts clients, decapsulates their packets and forwards them with SNAT.',
  properties: {
    $schema: schemaKey,
    role: {type: 'string', const: 'node', description: 'This file configures a proxy node.'},
    name: {
      ...name,
      description: 'Instance name, used in state file and firewall chain names.',
    },
    transport: {...transportName, description: 'Transport served by default.'},
    listen: {
      type: 'object',
      description: 'The control channel (TLS 1.3 over TCP); the tls transport carries data on it too.',
      default: {},
      properties: {
        address: {...ipv4, default: '0.0.0.0', description: 'Address to listen on.'},
        port: {...port, default: 443, description: 'TCP port to listen on.'},
        limits: {
          type: 'object',
          default: {},
          description:
            'What a source may cost the node before it is authenticated (docs/hardening.md). A connected ' +
            "player's session never counts against these.",
          properties: {
            perSource: {
              type: 'integer',
              minimum: 1,
              maximum: 65536,
              default: 256,
              description:
                'Unauthenticated control connections one source address may hold at once; more are closed at once. ' +
                'Raise it for very many players behind one carrier-grade NAT address.',
            },
            pending: {
              type: 'integer',
              minimum: 1,
              maximum: 65536,
              default: 2048,
              description: 'Unauthenticated control connections in all; past it the oldest is closed to make room.',
            },
            handshakeSeconds: {
              type: 'integer',
              minimum: 1,
              maximum: 120,
              default: 5,
              description: 'A connection must be authenticated this many seconds after it is accepted, whatever it sends.',
            },
            newPerSecond: {
              type: 'integer',
              minimum: 1,
              maximum: 1000000,
              default: 500,
              description:
                'New control connections per second from one source address (bursts of twice as many); the firewall drops the rest.',
            },
          },
          additionalProperties: false,
        },
      },
      additionalProperties: false,
    },
    tunnel: {
      type: 'object',
      properties: {
        interface: {...ifname, default: 'agent0', description: 'Name of the TUN device.'},
        subnet: {
          ...cidr,
          description: 'Tunnel network (prefix /8 to /30), written as its network address.',
        },
        address: {...ipv4, description: "The node's tunnel address. Default: the first host of the subnet."},
        pool: {
          type: 'object',
          description:
            'Addresses handed to clients without a static address. Default: every host of the subnet. ' +
            "The node's address and static client addresses are always skipped.",
          properties: {
            start: {...ipv4, description: 'First address of the pool.'},
            end: {...ipv4, description: 'Last address of the pool (inclusive).'},
          },
          required: ['start', 'end'],
          additionalProperties: false,
        },
        mtu,
      },
      required: ['subnet'],
      additionalProperties: false,
    },
    egress: {
      type: 'object',
      description: 'Where forwarded traffic leaves the node.',
      properties: {
        interface: {...ifname, description: 'Outgoing network interface.'},
        snat: {
          type: 'string',
          pattern: `^(?:masquerade|${IPV4})$`,
          patternErrorMessage: 'must be "masquerade" or an IPv4 address',
          default: 'masquerade',
          description: '"masquerade" (the address of the egress interface), or a fixed IPv4 source address.',
        },
        deny: {
          type: 'array',
          items: {...cidr},
          default: ['169.254.0.0/16'],
          description:
            'Destinations clients may never reach through the node, as IPv4 networks in CIDR notation. The default keeps them off link-local addresses such as a cloud metadata service (169.254.169.254); add private networks the node can reach. [] allows everything the egress route leads to.',
        },
      },
      required: ['interface'],
      additionalProperties: false,
    },
    pki: nodePki,
    clients: {
      description:
        'Who may connect. A list of clients by certificate name (with an optional static address and fingerprint pin), ' +
        'or "any": any client certificate of the fleet CA that is not revoked. "any" may also stand as an item of the ' +
        'list, so that listed clients keep their static addresses and pins while everyone else of the CA gets a pool ' +
        'address. Empty: nobody is forwarded. Changes apply live on `agent reload`.',
      default: [],
      // if/then/else rather than anyOf, so a typo inside one client is reported at that client
      // ("unknown key adress") instead of as "matches none of the forms" for the whole list.
      if: {type: 'string'},
      then: anyClient,
      else: {type: 'array', items: {if: {type: 'string'}, then: anyClient, else: clientEntrySchema}},
    },
    workers: {
      anyOf: [
        {type: 'integer', minimum: 1, maximum: 64},
        {type: 'string', const: 'auto'},
      ],
      default: 'auto',
      errorMessage: 'must be "auto" or a whole number from 1 to 64',
      description:
        'Threads that carry packets, each on its own TUN queue and UDP socket, so the node uses more than one core. ' +
        '"auto": one per CPU core, at most 8, or one where the host cannot have more. Only gre (without checksum or ' +
        'sequence) and ipip over udp spread over workers; tls, ipsec-over-gre and bare IP carriers run on one.',
    },
    fleet,
    gameProbe: {
      type: 'object',
      default: {},
      description:
        "How the node measures its round trip to the game servers its clients route (the clients' /32 routes), so that a " +
        'client can rank nodes by the whole path. Only destinations the node would forward to (egress.deny applies), at most ' +
        '8 per client and `destinations` in all, each probed every `intervalSeconds`.',
      properties: {
        method: {
          type: 'string',
          enum: ['tcp', 'off'],
          default: 'tcp',
          description: '"tcp": a TCP SYN to `port` (a SYN-ACK or a reset answers, and the connection is closed at once); "off": measure nothing (clients rank by their RTT to the node alone).',
        },
        port: {...port, default: 443, description: 'The port the TCP SYN goes to.'},
        intervalSeconds: {type: 'number', minimum: 0.5, maximum: 60, default: 2, description: 'Seconds between probes of one destination.'},
        destinations: {type: 'integer', minimum: 1, maximum: 10000, default: 1024, description: 'Most destinations measured at once, for all clients.'},
      },
      additionalProperties: false,
    },
    session: {
      type: 'object',
      default: {},
      properties: {
        idleTimeout: {
          type: 'integer',
          minimum: 10,
          maximum: 86400,
          default: 180,
          description: "Seconds of silence after which a client's session expires.",
        },
      },
      additionalProperties: false,
    },
    transports,
    log,
    metrics,
  },
  required: ['role', 'name', 'tunnel', 'egress', 'pki'],
  additionalProperties: false,
} as const

const nodeHost = {
  type: 'string',
  pattern: `^(?=.{1,253}\\.?$)${LABEL}(?:\\.${LABEL})*\\.?$`,
  patternErrorMessage: 'must be an IPv4 address or a DNS name',
  description: "The node's IPv4 address or DNS name.",
} as const
const nodePort = {...port, default: 443, description: "The node's control channel port."} as const
const nodeCertName = {type: 'string', minLength: 1, maxLength: 253, description: "The name the node's certificate must carry. Default: host."} as const

export const clientConfigSchema = {
  type: 'object',
  title: 'Client config',
  description: 'A client: routes chosen destinations through a TUN device to a proxy node.',
  properties: {
    $schema: schemaKey,
    role: {type: 'string', const: 'client', description: 'This file configures a client.'},
    name: {...name, description: "Instance name; the common name of this client's certificate."},
    transport: {...transportName, description: 'Transport to use.'},
    node: {
      type: 'object',
      description: 'The proxy node to connect to (or list several under `nodes`).',
      properties: {
        host: nodeHost,
        port: nodePort,
        name: nodeCertName,
      },
      required: ['host'],
      additionalProperties: false,
    },
    nodes: {
      type: 'array',
      minItems: 1,
      maxItems: 64,
      description:
        'Nodes to choose from, instead of `node`: the client rides the best by measured RTT to the node and on to the game ' +
        'servers, and moves when one is clearly better or the current one stops answering (see `selection`).',
      items: {
        type: 'object',
        properties: {
          host: nodeHost,
          port: nodePort,
          name: nodeCertName,
          preference: {
            type: 'number',
            minimum: -1000,
            maximum: 1000,
            default: 0,
            description: "Milliseconds taken off this node's score when ranking: 10 keeps it unless another is more than 10 ms better.",
          },
        },
        required: ['host'],
        additionalProperties: false,
      },
    },
    selection: {
      type: 'object',
      default: {},
      description: 'How the client chooses among nodes, probes them, and fails over (docs/failover.md).',
      properties: {
        probeSeconds: {type: 'number', minimum: 0.1, maximum: 10, default: 0.5, description: 'Seconds between probes of the current node.'},
        probeOthersSeconds: {type: 'number', minimum: 1, maximum: 300, default: 4, description: 'Seconds between probes of each other node (jittered).'},
        deadSeconds: {
          type: 'number',
          minimum: 0.3,
          maximum: 60,
          default: 2,
          description: 'The current node is gone when nothing was heard from it for this long: the client moves to the next best.',
        },
        switchAfterSeconds: {type: 'number', minimum: 1, maximum: 3600, default: 10, description: 'How long another node must stay clearly better before the client moves.'},
        betterByMs: {type: 'number', minimum: 10, maximum: 1000, default: 10, description: 'Clearly better: at least this many ms better than the current node...'},
        betterRatio: {type: 'number', minimum: 0.1, maximum: 0.667, default: 0.667, description: "...and under this share of the current node's score."},
        fleet: {type: 'boolean', default: true, description: "Also weigh the other nodes a fleet's node names in its welcome."},
        startSeconds: {type: 'number', minimum: 0, maximum: 10, default: 1, description: 'At start, how long to probe the nodes before choosing one (only with more than one).'},
      },
      additionalProperties: false,
    },
    routes: {
      type: 'array',
      description: 'Destinations sent into the tunnel, as IPv4 networks in CIDR notation.',
      minItems: 1,
      items: {...cidr, patternErrorMessage: 'must be an IPv4 network in CIDR notation such as 192.0.2.0/24, or 192.0.2.7/32 for one host'},
    },
    tunnel: {
      type: 'object',
      default: {},
      properties: {
        interface: {...ifname, default: 'agent0', description: 'Name of the TUN device.'},
        mtu,
      },
      additionalProperties: false,
    },
    pki,
    transports,
    reconnect: {
      type: 'object',
      description: 'Backoff between attempts to reach the node.',
      default: {},
      properties: {
        minSeconds: {type: 'number', minimum: 0.1, maximum: 3600, default: 1, description: 'First wait, in seconds.'},
        maxSeconds: {
          type: 'number',
          minimum: 0.1,
          maximum: 3600,
          default: 30,
          description: 'Longest wait, in seconds; not less than minSeconds.',
        },
      },
      additionalProperties: false,
    },
    log,
    metrics,
  },
  required: ['role', 'name', 'routes', 'pki'],
  additionalProperties: false,
} as const

export const SCHEMA_ID = 'urn:agent:schema:agent-config:1'

export const configSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: SCHEMA_ID,
  title: 'agent config',
  description: 'Config file of one agent instance: a proxy node (role: node) or a client (role: client).',
  type: 'object',
  // ajv picks the branch from `role`, so errors speak of that branch only; editors use oneOf.
  discriminator: {propertyName: 'role'},
  oneOf: [nodeConfigSchema, clientConfigSchema],
} as const

/** The schema file's exact text (shared by the generator and the test that checks the file). */
export function renderSchema(): string {
  return JSON.stringify(configSchema, null, 2) + '\n'
}
