//! Links the GPL-3.0 stand-in; never built, only checked by cargo deny.
