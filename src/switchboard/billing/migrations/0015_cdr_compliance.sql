-- Regulatory compliance on the CDR (docs/compliance.md):
-- emergency: the leg belongs to an emergency call (112, 911, ... as [emergency] numbers
--   lists them): both legs of the call; auditors count them, credit control never held them.
-- verstat: the edge router's STIR/SHAKEN verdict on the call coming in (ATIS-1000074:
--   'TN-Validation-Passed', 'TN-Validation-Failed', 'No-TN-Validation'); NULL where the
--   router does not verify (or on legs we originate).
-- attestation: 'A', 'B' or 'C' as the caller's PASSporT claimed (RFC 8588); NULL without one.
-- CDRs stored before this migration: emergency false, the others NULL.
ALTER TABLE cdr
    ADD COLUMN emergency boolean NOT NULL DEFAULT false,
    ADD COLUMN verstat text,
    ADD COLUMN attestation text;
