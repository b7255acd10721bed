-- mxd queue schema, version 6: reserved for issue 18's recipient sync
-- (another branch); this placeholder changes nothing and is replaced by
-- that branch's 006 when the two are merged.
SELECT 1;
