-- A delivery sealed by the gateway keeps its JWE header as its `kid` and the ephemeral key's
-- 64 bytes (`Sealed::to_packed` version 2), rebuilt byte for byte when it is fetched; any
-- other header is deflated as before, and deliveries written before read as they did. No
-- earlier build reads version 2, so the store format becomes 5: a replica of an earlier
-- build still running beside this store fails its readiness instead of answering 500 for
-- each new delivery.
--
-- Part of 0.2.0, which is not yet released (its migrations may contract, see 0011).
UPDATE refex_meta SET value = '5' WHERE key = 'store_format';
