"""Pure FreeSWITCH Event Socket framing, commands and event encoding."""
