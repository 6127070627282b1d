-- The carrier trunk a call came in on ([trunks.NAME] at the edge router, which names it to
-- the media node in X-Switchboard-Trunk; '[acl]' sources form the trunk 'acl'). Set on the
-- inbound leg; NULL where no trunk is known ('' is stored as NULL). `switchboard report
-- --by trunk` groups on it. CDRs stored before this migration have none.
ALTER TABLE cdr ADD COLUMN trunk text;
