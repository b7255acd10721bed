-- mxd queue schema, version 7: reserved for issue 18's DSN options
-- (another branch); this placeholder changes nothing and is replaced by
-- that branch's 007 when the two are merged.
SELECT 1;
