from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import EnvList, ServiceSettings


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore", populate_by_name=True)

    port: int = Field(8004, description="HTTP port")
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/coworking_notifications", description="PostgreSQL URL"
    )
    seal_key: str | None = Field(
        None, description="The key shared with accounts to open sealed links (same value as ACCOUNTS_SEAL_KEY)"
    )
    smtp_host: str | None = Field(None, description="SMTP server; when unset, emails are written to MAIL_DIR")
    smtp_port: int = Field(25, description="SMTP port")
    smtp_username: str | None = Field(None, description="SMTP login")
    smtp_password: str | None = Field(None, description="SMTP password")
    smtp_starttls: bool = Field(False, description="Upgrade the connection with STARTTLS")
    smtp_tls: bool = Field(False, description="Implicit TLS (port 465)")
    smtp_timeout_s: float = Field(15.0, description="Timeout of one SMTP conversation")
    delivery_lease_s: float = Field(
        60.0,
        ge=1,
        description="How long a claimed delivery is left to its dispatcher before another may send it (at least 4 x "
        "the SMTP timeout): after a crash between the server's acceptance and the record, the email goes again then",
    )
    smtp_max_messages_per_connection: int = Field(
        100, description="Emails sent over one SMTP connection before it is closed and a new one opened"
    )
    smtp_idle_timeout_s: float = Field(
        30.0, description="An SMTP connection unused this long is closed rather than re-used"
    )
    mail_dir: Path = Field(Path(".local/mail"), description="Folder of .eml files when no SMTP server is set")
    mail_from: str = Field("Coworking <no-reply@coworking.invalid>", description="From header of every email")
    space_name: str = Field("Coworking", description="Name of the space, used in email texts")
    send_retry_delays_s: Annotated[list[float], *EnvList] = Field(
        default=[5, 30, 120, 600, 1800, 3600],
        description="Waits between attempts after a temporary SMTP failure; then the delivery fails",
    )
    dispatch_batch_size: int = Field(50, description="Deliveries claimed per dispatcher round")
    dispatch_concurrency: int = Field(10, description="Emails sent at once (and most SMTP connections open)")
    dispatch_poll_interval_s: float = Field(1.0, description="Fallback poll for due deliveries")
