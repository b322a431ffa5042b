-- A delivery's ciphertext kept as its five segments' bytes (Sealed::to_packed) rather than
-- their base64url text: three quarters of the size, and rows that share a page two by two.
-- The recipient still fetches the same compact JWE, byte for byte; `bytes` is still its size.
-- Deliveries written before keep their text in `sealed` and read as they did.
--
-- Part of 0.2.0, which is not yet released (store format 4, see 0012).
ALTER TABLE deliveries ADD COLUMN sealed_packed BLOB;
