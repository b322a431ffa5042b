-- Each audit event stored once and small: the columns that place it (index, time, kind,
-- referral, delivery, actor) and its detail packed (raw deflate primed with a dictionary of
-- the words details are made of; crates/refex-store/src/packed.rs). Its leaf text is rebuilt
-- from those parts (refex_core::audit::event::LeafParts), and the leaf hash in audit_nodes
-- proves the rebuild. Events written before keep their leaf text and read as they did.
--
-- Part of 0.2.0, which is not yet released (its migrations may contract, see 0011): events
-- written from now on have no leaf text, which no earlier build reads, so the store format
-- becomes 4 and a replica of an earlier build still running fails its readiness.
ALTER TABLE audit_events ADD COLUMN packed_detail BYTEA;

UPDATE refex_meta SET value = '4' WHERE key = 'store_format';
