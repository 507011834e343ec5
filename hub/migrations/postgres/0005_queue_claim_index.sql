-- A claim takes the oldest ready messages of a queue (ORDER BY seq LIMIT n). Indexed by
-- visible_at_ms first, that needed a sort of every ready message per claim (a 100,000-step
-- apply made the embedded queue CPU-bound); in seq order the scan stops after n.
-- Same as ../sqlite/0005.
DROP INDEX queue_messages_ready;
CREATE INDEX queue_messages_ready ON queue_messages (queue, state, seq);
