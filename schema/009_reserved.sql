-- Placeholder for schema 009 (MTA-STS policies, issue 19's other part,
-- another branch): replaced by that branch's file at the merge.
SELECT 1;
