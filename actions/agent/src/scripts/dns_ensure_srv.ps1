function Get-Srv {
    $list = @(Get-DnsServerResourceRecord -ZoneName $P.zone -Name $P.record -RRType Srv -ErrorAction SilentlyContinue |
        ForEach-Object {
            [ordered]@{
                target = ([string]$_.RecordData.DomainName).TrimEnd('.')
                port = [int]$_.RecordData.Port
                priority = [int]$_.RecordData.Priority
                weight = [int]$_.RecordData.Weight
            }
        })
    return ,$list
}
$present = @((Get-Srv) | Where-Object {
    $_.target -eq $P.target -and $_.port -eq $P.port -and $_.priority -eq $P.priority -and $_.weight -eq $P.weight
})
$created = $false
if ($present.Count -eq 0) {
    Add-DnsServerResourceRecord -ZoneName $P.zone -Srv -Name $P.record -DomainName $P.target `
        -Priority $P.priority -Weight $P.weight -Port $P.port -TimeToLive (New-TimeSpan -Seconds $P.ttl) | Out-Null
    $created = $true
}
Write-Result ([ordered]@{ name = $P.name; records = (Get-Srv); created = $created })
