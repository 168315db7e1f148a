//! The PBFT replica as a pure state machine that finalizes DAG anchors, and the seeded simulator that attacks it.
