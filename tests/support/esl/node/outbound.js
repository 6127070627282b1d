// An IVR written with modesl's outbound server (esl.Server: the program a node's `socket`
// application connects to), printing one JSON summary line. Usage:
//   node outbound.js <port> ivr|die
// ivr: one digit (play_and_get_digits), `set ivr_choice=<digit>`, hangup, then read
// (linger) up to CHANNEL_HANGUP_COMPLETE; die: start a playback and exit the process.
'use strict';
const esl = require('modesl');

const [port, mode] = process.argv.slice(2);
const out = { client: 'modesl', events: [] };
const finish = (code) => { console.log(JSON.stringify(out)); process.exit(code); };
setTimeout(() => { out.error = 'timeout'; finish(1); }, 60000);
const PAGD = "1 1 1 8000 # prompt '' ivr_choice \\d 8000";
const KEYS = ['Event-Name', 'Unique-ID', 'Caller-Destination-Number', 'Socket-Mode', 'Control'];

const server = new esl.Server({ port: Number(port), host: '127.0.0.1', myevents: true }, () => {
  console.log('READY');
});
server.on('connection::ready', (conn) => {
  const info = conn.getInfo();
  out.connect = Object.fromEntries(KEYS.map((k) => [k, info.getHeader(k)]));
  conn.on('esl::event::**', function (e, headers) {
    if (this.event.endsWith('::disconnect::notice')) {
      out.events.push(['disconnect-notice', headers['Content-Disposition'] || '', 0]);
      return;
    }
    const name = e.getHeader('Event-Name');
    if (!name || !String(headers['Content-Type'] || '').startsWith('text/event')) return;
    out.events.push([name, e.getHeader('Application') || '', Number(e.getHeader('Event-Sequence'))]);
    if (name === 'CHANNEL_HANGUP_COMPLETE') {
      out.hangup_cause = e.getHeader('Hangup-Cause');
      out.choice = e.getHeader('variable_ivr_choice');
      setTimeout(() => finish(0), 100);
    }
  });
  conn.sendRecv('linger', () => {
    if (mode === 'die') {
      conn.execute('playback', 'prompt');
      setTimeout(() => { console.log(JSON.stringify(out)); process.exit(3); }, 50);
      return;
    }
    conn.execute('play_and_get_digits', PAGD, (e) => {
      out.digit = e.getHeader('Application-Response');
      conn.execute('set', 'ivr_choice=' + out.digit, () => conn.execute('hangup', 'NORMAL_CLEARING'));
    });
  });
});
