// Drive the Event Socket with the npm client modesl exactly as an application would,
// and print one JSON summary line. Usage:
//   node probe.js <port> <caller-id> <dial string> <destination> <kill: 0|1>
'use strict';
const esl = require('modesl');

const [port, cid, dial, dest, kill] = process.argv.slice(2);
const out = { client: 'modesl', events: [] };
const finish = (code) => { console.log(JSON.stringify(out)); process.exit(code); };
setTimeout(() => { out.error = 'timeout'; finish(1); }, 25000);

function badPassword(next) {
  const bad = new esl.Connection('127.0.0.1', Number(port), 'wrong-password');
  bad.on('error', (e) => { out.bad_error = String(e); });
  bad.on('esl::event::auth::fail', () => { out.bad_auth = 'fail'; });
  bad.on('esl::end', next);
}

function good() {
  const c = new esl.Connection('127.0.0.1', Number(port), 'ClueCon', () => {
    c.api('status', (res) => {
      out.status = res.getBody().split('\n')[0];
      const names = ['CHANNEL_ANSWER', 'CHANNEL_HANGUP', 'CHANNEL_HANGUP_COMPLETE'];
      c.subscribe(names.slice(), () => {  // modesl appends to the array it is given
        c.filter('Caller-Caller-ID-Number', cid, () => {
          // One wildcard listener; modesl emits esl::event::<Event-Name>::<uuid>.
          c.on('esl::event::*::*', (e) => {
            const name = e.getHeader('Event-Name');
            if (!names.includes(name)) return;
            out.events.push({
              name, uuid: e.getHeader('Unique-ID'), cause: e.getHeader('Hangup-Cause'),
              billsec: e.getHeader('variable_billsec'), duration: e.getHeader('variable_duration'),
              cid: e.getHeader('Caller-Caller-ID-Number'),
            });
            if (name === 'CHANNEL_ANSWER' && kill === '1') {
              c.api('uuid_kill ' + e.getHeader('Unique-ID'), (r) => { out.kill = r.getBody(); });
            }
            if (name === 'CHANNEL_HANGUP_COMPLETE') {
              c.show('channels', 'json', (err, data) => {
                out.show_error = err ? String(err) : null;
                out.show_count = data ? data.row_count : null;
                c.disconnect();
                finish(0);
              });
            }
          });
          c.bgapi('originate', `{origination_caller_id_number=${cid}}${dial} ${dest}`, (evt) => {
            out.bgapi = evt.getBody();
            out.job_uuid = evt.getHeader('Job-UUID');
            if (!out.bgapi.startsWith('+OK')) finish(0);
          });
        });
      });
    });
  });
  c.on('error', (e) => { out.error = String(e); finish(1); });
}

badPassword(good);
