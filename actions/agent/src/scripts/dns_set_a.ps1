Get-DnsServerResourceRecord -ZoneName $P.zone -Name $P.record -RRType A -ErrorAction SilentlyContinue |
    Remove-DnsServerResourceRecord -ZoneName $P.zone -Force
Add-DnsServerResourceRecordA -ZoneName $P.zone -Name $P.record -IPv4Address $P.address `
    -TimeToLive (New-TimeSpan -Seconds $P.ttl) | Out-Null
$addresses = @(Get-DnsServerResourceRecord -ZoneName $P.zone -Name $P.record -RRType A | ForEach-Object {
    $_.RecordData.IPv4Address.IPAddressToString
})
Write-Result ([ordered]@{ name = $P.name; addresses = $addresses })
