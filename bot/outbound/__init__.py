"""The single way out: the outbound gate (may this message go?) and the sending of
recorded messages, exactly once, through a transport."""
